"""The HTML report of a search (`qlora-launch report RUN_DIR`).

- `data`: the report's view of a run folder (`load_report_data`, read through RunDir) and the numbers
  behind the plots; also what `runs` shows.
- `figures`: the plotly figures of the page; `pngs`: the matplotlib PNGs of the same plots.
- `html`: the page's sections and `write_report`; `page`: its HTML skeleton, CSS and JS.

Nothing is imported here: `runs` reads `data` without loading the rest.
"""

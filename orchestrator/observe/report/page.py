"""The report page's fixed parts: the HTML skeleton (`PAGE`, a str.format template), its CSS and its JS.

Everything is inlined into one file: the page fetches nothing (plotly.js goes into `{plotlyjs}`).
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<script>
// Any script error shows as a banner (and in #report-errors, which tests read).
window.__reportErrors = [];
window.addEventListener("error", function (e) {{
  window.__reportErrors.push(String(e.message || e));
  var box = document.getElementById("report-errors");
  if (box) {{ box.hidden = false; box.textContent = "Some parts of this report failed to render: "
      + window.__reportErrors.join("; "); }}
}});
</script>
<script type="text/javascript">{plotlyjs}</script>
<style>{css}</style>
</head><body><main>
{body}
</main>
<script>{js}</script>
</body></html>
"""

CSS = """
:root { --ink:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff; --accent:#4e79a7;
        --ok:#15803d; --bad:#b91c1c; --warn:#b45309; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); overflow-wrap:break-word;
       font: 14px/1.5 Inter, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 28px 28px 40px; }
header { display:flex; justify-content:space-between; align-items:flex-end; gap:16px; margin-bottom:18px; }
.eyebrow { text-transform:uppercase; letter-spacing:.08em; font-size:11px; color:var(--accent); font-weight:700; }
h1 { margin:2px 0 4px; font-size:28px; letter-spacing:-.01em; }
h2 { font-size:17px; margin:28px 0 10px; }
h3 { font-size:12px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); margin:4px 0 8px; }
.sub, .muted, .hint { color:var(--muted); }
.hint { font-weight:400; font-size:12px; margin-left:8px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px;
        box-shadow: 0 1px 2px rgba(0,0,0,.03); position:relative; }
.card.empty { color:var(--muted); }
.grid2 { display:grid; grid-template-columns: repeat(2, minmax(0,1fr)); gap:16px; }
.grid3 { display:grid; grid-template-columns: repeat(3, minmax(0,1fr)); gap:16px; }
@media (max-width: 1000px) { .grid2, .grid3 { grid-template-columns: 1fr; } }
.kpis { display:grid; grid-template-columns: repeat(auto-fit, minmax(200px,1fr)); gap:12px; }
.kpi { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 16px; }
.kpi .label { font-size:12px; color:var(--muted); font-weight:600; }
.label { font-size:11px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); }
.kpi .value { font-size:26px; font-weight:700; margin:2px 0; font-variant-numeric: tabular-nums; }
.kpi .sub, .sub { font-size:12px; color:var(--muted); }
.kpi.ok .value { color:var(--ok); } .kpi.bad .value { color:var(--bad); }
.meter { height:8px; background:#e8edf3; border-radius:99px; overflow:hidden; margin:6px 0 4px; }
.meter.big { height:14px; }
.meter span { display:block; height:100%; background:linear-gradient(90deg,#4e79a7,#59a14f); border-radius:99px; }
.share { margin-bottom:14px; }
.plot { padding:8px 10px 6px; min-height: 420px; }
.plot .caption { margin:2px 6px 4px; font-size:12px; color:var(--muted); }
.js-plotly-plot .plotly .modebar { opacity:0; transition:opacity .2s; }
.card.plot:hover .js-plotly-plot .plotly .modebar { opacity:1; }
h3.plot-title { margin:4px 6px 0; font-size:13px; text-transform:none; letter-spacing:0; color:var(--ink); }
a.png { font-size:10px; font-weight:500; color:var(--muted); text-decoration:none; vertical-align:middle;
        border:1px solid var(--line); border-radius:6px; padding:0 5px; margin-left:6px; }
a.png:hover { color:var(--accent); border-color:var(--accent); }
.tablewrap { padding:0; overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
#trial-table th, #trial-table td { padding:8px 12px; border-bottom:1px solid var(--line); text-align:left;
        white-space:nowrap; }
#trial-table th { font-size:12px; color:var(--muted); font-weight:600; cursor:pointer; user-select:none;
        background:#fafafa; position:sticky; top:0; }
#trial-table th:hover { color:var(--ink); }
#trial-table th.asc::after { content:" ▲"; } #trial-table th.desc::after { content:" ▼"; }
#trial-table td.num { text-align:right; font-variant-numeric: tabular-nums; }
#trial-table tr.best td { background:#f0f7ee; font-weight:600; }
#trial-table td.metric { background: linear-gradient(90deg, rgba(89,161,79,.22) calc(var(--s)*100%), transparent 0); }
.sid { display:inline-block; min-width:26px; color:var(--muted); font-variant-numeric: tabular-nums; }
.star { color:#e0a800; }
.pill { font-size:11px; padding:2px 8px; border-radius:99px; font-weight:600; }
.pill.completed { background:#dcfce7; color:var(--ok); }
.pill.stopped_early { background:#fef3c7; color:var(--warn); }
.pill.error { background:#fee2e2; color:var(--bad); }
.pill.skipped_wont_fit { background:#f3e8ff; color:#7e22ce; }
table.kv th { text-align:left; font-weight:500; color:var(--muted); padding:3px 12px 3px 0; font-size:13px;
        white-space:nowrap; vertical-align:top; }
table.kv td { padding:3px 0; font-variant-numeric: tabular-nums; font-size:13px; word-break:break-all; }
table.kv + h3 { margin-top:14px; }
details { margin-top:10px; } summary { cursor:pointer; color:var(--accent); }
pre { background:#f8fafc; border:1px solid var(--line); padding:10px; border-radius:8px; max-height:360px;
      overflow:auto; font-size:12px; }
code { font-size:12px; }
.samples { display:grid; grid-template-columns: repeat(auto-fit, minmax(380px,1fr)); gap:14px; }
.sample p { margin:2px 0 10px; overflow-wrap:anywhere; }
.sample-head { display:flex; justify-content:space-between; align-items:center; margin-bottom:6px; }
.badge { font-size:11px; background:#eef2ff; color:#3730a3; border-radius:99px; padding:2px 8px; font-weight:600; }
.sample .in p { color:#374151; font-size:13px; }
.pair { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1fr); gap:10px; }
.pair > div { border-radius:8px; padding:8px 10px; }
.ref { background:#f0f7ee; border-left:3px solid #59a14f; }
.pred { background:#eef4fb; border-left:3px solid #4e79a7; }
.errors { background:#fee2e2; color:var(--bad); border:1px solid #fecaca; padding:10px 14px; border-radius:8px;
          margin:12px 0; }
footer { margin-top:32px; color:var(--muted); font-size:12px; line-height:1.8; }
"""

JS = """
(function () {
  // Sortable trial table: click a header; numbers sort as numbers, blanks last.
  var table = document.getElementById("trial-table");
  if (table) {
    var heads = table.querySelectorAll("th");
    heads.forEach(function (th) {
      th.addEventListener("click", function () {
        var col = +th.dataset.col, asc = !th.classList.contains("asc");
        heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
          if (x === "" || x === undefined) return 1;
          if (y === "" || y === undefined) return -1;
          var nx = parseFloat(x), ny = parseFloat(y);
          var r = (!isNaN(nx) && !isNaN(ny) && isFinite(x) && isFinite(y)) ? nx - ny : String(x).localeCompare(String(y));
          return asc ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }
  // Tell a reader (or a test) how many plots rendered.
  document.body.dataset.plots = document.querySelectorAll(".js-plotly-plot").length;
  document.body.dataset.errors = window.__reportErrors.length;
})();
"""

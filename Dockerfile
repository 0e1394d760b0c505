# The image every node of cluster.yaml runs: the official Ray GPU image for the pinned Ray and Python
# (ray==2.60.0 in requirements.lock, resolved on Python 3.11), this project and its pinned runtime
# dependencies (requirements.lock only: the test and lint tools of requirements-dev.lock stay out).
#
#   docker build -t <registry>/qlora-launch:0.1.0 .
#   docker push <registry>/qlora-launch:0.1.0          # then set docker.image in cluster.yaml
#
# No secrets at build time or in any layer: tokens and keys reach the jobs as environment variables
# at submission (orchestrator/launch/cluster.py) and the Ray auth token as a file mount (cluster.yaml).
# Linted by tests/unit/test_cluster_files.py (hadolint).
FROM rayproject/ray:2.60.0-py311-gpu

# The base image's non-root user `ray` (uid 1000, group users; numeric so any host resolves it),
# with conda's Python 3.11 on PATH.
USER 1000:100
WORKDIR /home/ray/qlora-launch

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first, from the lock alone: this layer is rebuilt only when the pins change.
# torch==2.13.0 from PyPI is the CUDA build on Linux x86_64.
COPY --chown=1000:100 requirements.lock ./
# Then training.kernels liger (pyproject's `gpu` extra): pure Python over Triton, which torch's CUDA wheel installed.
RUN pip install --no-cache-dir -r requirements.lock \
    && pip install --no-cache-dir --no-deps liger-kernel==0.8.5

# The project itself (jobs also carry it as their working_dir, so code changes need no rebuild).
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 orchestrator ./orchestrator
COPY --chown=1000:100 jobs ./jobs
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import orchestrator.cli, orchestrator.launch.entry, ray; assert ray.__version__ == '2.60.0', ray.__version__"

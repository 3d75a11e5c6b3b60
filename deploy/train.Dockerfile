# The training image: torch (CPU), the training code and the artifact contract (no server); trains a recipe and exports
# it into /models.
#   make wheels && podman build --format docker -f deploy/train.Dockerfile -t rnnserve-train .
#   podman run --rm -v $PWD/models:/models -v $PWD/../shared/data:/srv/shared/data:ro rnnserve-train tiny-lm
# Data-parallel: -e NPROC=2 (torchrun on this machine), or NNODES/RDZV_ENDPOINT/RDZV_ID across machines (train.sh).
# Packages come from deploy/wheels/train (made on the host by `make wheels`), bind-mounted into the one
# RUN that installs them: the build needs no index, and the wheels never become a layer.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

RUN groupadd --gid 10001 rnnserve \
 && useradd --uid 10001 --gid rnnserve --home-dir /srv/rnnserve --no-create-home --shell /usr/sbin/nologin rnnserve \
 && mkdir -p /srv/rnnserve/runs /models && chown rnnserve:rnnserve /srv/rnnserve/runs /models
# Copied, not bind-mounted, so that a changed requirement invalidates the cached install layer.
COPY requirements/serve.txt requirements/train.txt /tmp/requirements/
RUN --mount=type=bind,source=deploy/wheels/train,target=/wheels \
    pip="/opt/rnnserve/bin/python $(echo /wheels/pip-*.whl)/pip install -q --no-index --find-links /wheels --no-cache-dir" \
 && python3 -m venv --without-pip /opt/rnnserve \
 && $pip -r /tmp/requirements/serve.txt -r /tmp/requirements/train.txt
COPY training /srv/rnnserve/training
# Training imports nothing from service/ but the artifact contract (meta, tokenizers, sampling, graph reading, the ONNX
# Runtime session a graph is served in): not the server (tests/training/test_boundary.py).
COPY service/__init__.py /srv/rnnserve/service/__init__.py
COPY service/artifact /srv/rnnserve/service/artifact
COPY recipes /srv/rnnserve/recipes
COPY deploy/train.sh /srv/rnnserve/train.sh
# Recipes name their data as ../shared/data/...: mount the data directory at /srv/shared/data.
ENV PATH=/opt/rnnserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_WAIT_POLICY=PASSIVE
WORKDIR /srv/rnnserve
USER 10001:10001
VOLUME ["/models"]
ENTRYPOINT ["sh", "/srv/rnnserve/train.sh"]
CMD ["tiny-lm"]

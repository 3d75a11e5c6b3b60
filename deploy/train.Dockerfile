# The training image: torch (CPU) + the training code; trains a recipe and exports it into /models.
#   make wheels && podman build -f deploy/train.Dockerfile -t rnnserve-train .
#   podman run --rm -v $PWD/models:/models -v $PWD/../shared/data:/srv/shared/data:ro rnnserve-train tiny-lm
# Packages come from deploy/wheels/train (made on the host by `make wheels`): the build needs no index.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY deploy/wheels/train /wheels
COPY requirements/serve.txt requirements/train.txt /tmp/requirements/
RUN pip="/opt/rnnserve/bin/python $(echo /wheels/pip-*.whl)/pip install -q --no-index --find-links /wheels" \
 && python3 -m venv --without-pip /opt/rnnserve \
 && $pip -r /tmp/requirements/train.txt

FROM ${BASE_IMAGE}
RUN groupadd --gid 10001 rnnserve \
 && useradd --uid 10001 --gid rnnserve --home-dir /srv/rnnserve --no-create-home --shell /usr/sbin/nologin rnnserve \
 && mkdir -p /srv/rnnserve/runs /models && chown rnnserve:rnnserve /srv/rnnserve/runs /models
COPY --from=build /opt/rnnserve /opt/rnnserve
COPY training /srv/rnnserve/training
COPY service /srv/rnnserve/service
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

# The rnnserve service image: ONNX Runtime + the gRPC stack, no torch; runs as a non-root user.
#   make wheels && podman build --format docker -f deploy/rnnserve.Dockerfile -t rnnserve .   (or: docker build)
# Packages come from deploy/wheels/serve (made on the host by `make wheels`), bind-mounted into the one
# RUN that installs them: the build needs no index, and the wheels never become a layer.
# Models: mount a repository read-only at /models (the default), or bake one in with --build-arg MODELS=models.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

RUN groupadd --gid 10001 rnnserve \
 && useradd --uid 10001 --gid rnnserve --home-dir /app --no-create-home --shell /usr/sbin/nologin rnnserve
# The requirements are copied, not bind-mounted: a copied file is part of the layer cache's key, so a changed
# requirement rebuilds the install (a bind mount is not, and a cached layer would keep the old packages).
COPY requirements/serve.txt /tmp/requirements/serve.txt
# pip runs from its wheel, so a base without pip (Debian's python3) works as well as python:3.11-slim.
RUN --mount=type=bind,source=deploy/wheels/serve,target=/wheels \
    pip="/opt/rnnserve/bin/python $(echo /wheels/pip-*.whl)/pip install -q --no-index --find-links /wheels --no-cache-dir" \
 && python3 -m venv --without-pip /opt/rnnserve \
 && $pip -r /tmp/requirements/serve.txt
COPY service /app/service
# The generated gRPC code is made here, as `make proto` does; grpcio-tools is gone after this step.
RUN --mount=type=bind,source=deploy/wheels/serve,target=/wheels \
    --mount=type=bind,source=protos,target=/app/protos \
    /opt/rnnserve/bin/python $(echo /wheels/pip-*.whl)/pip install -q --no-index --find-links /wheels --no-cache-dir \
      --no-deps --target /tmp/protoc grpcio-tools setuptools \
 && cd /app && PYTHONPATH=/tmp/protoc /opt/rnnserve/bin/python -m protos.build \
 && rm -rf /tmp/protoc \
 && /opt/rnnserve/bin/python -m compileall -q /app/service
COPY deploy/grpc_health_probe.py /app/grpc_health_probe.py
ARG MODELS=deploy/no-models
COPY ${MODELS}/ /models/
# glibc malloc gives memory back after large requests (messages of MBs): a fixed mmap threshold (the dynamic
# one rises after the first 1 MiB message and keeps later ones in the heap), trimming, two arenas instead of
# eight per core. A client's 200 x 1 MiB requests left RSS +57 MB with the defaults, +7 MB with these.
ENV MALLOC_MMAP_THRESHOLD_=131072 \
    MALLOC_TRIM_THRESHOLD_=131072 \
    MALLOC_ARENA_MAX=2
ENV PATH=/opt/rnnserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RNNSERVE_MODEL_DIR=/models
WORKDIR /app
USER 10001:10001
EXPOSE 50051 50052 8000 9090
# The standard gRPC health protocol (grpc.health.v1), overall status: NOT_SERVING while draining on SIGTERM.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["python", "/app/grpc_health_probe.py"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "service"]

# The adapter service (`ha3-adapter serve`), as docker-compose.yml runs it beside OpenSearch and MinIO.
#   docker build -t ha3-adapter .
# torch comes from PyPI at the version constraints.txt pins (a CUDA build that also runs on
# the CPU, several GB). For a CPU-only image a fraction of that size:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t ha3-adapter .
FROM python:3.11-slim

ARG TORCH_INDEX=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /opt/ha3-adapter
COPY pyproject.toml constraints.txt README.md ./
COPY adapter ./adapter
COPY mappings ./mappings
COPY pipelines ./pipelines
# Editable, so that mappings/ (the demo's schema) stays beside the package.
RUN pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -c constraints.txt -e .

# Never root: the service reads and writes only its data directory.
RUN useradd --system --create-home --home-dir /var/lib/ha3-adapter ha3
USER ha3
VOLUME /var/lib/ha3-adapter
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=30 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"
ENTRYPOINT ["ha3-adapter"]
CMD ["serve", "--config", "/etc/ha3-adapter/config.yaml", "--host", "0.0.0.0", "--port", "8080"]

# points-import: build the wheel, install it for a non-root user, smoke-run it.
#   docker build -t points-import .
#   docker run --rm -e ENGAGE_BASE_URL -e ENGAGE_API_KEY -v points-state:/data points-import run in.csv
# /data is the working folder and a volume: the journal (/data/.points-import) and the reports
# outlive the container only on a volume (see the README: "Kubernetes and containers").
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY configs ./configs
COPY sample_data ./sample_data
RUN pip install --no-cache-dir --quiet build && python -m build --wheel --outdir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 points
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir --quiet /tmp/*.whl && rm /tmp/*.whl \
    && points-import --help >/dev/null && points-import --version
RUN mkdir /data && chown points:points /data
USER points
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["points-import"]
CMD ["--help"]

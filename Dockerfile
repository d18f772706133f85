# Multi-stage, slim, non-root. Build: docker build -t upsell-triggers .
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m build --wheel --outdir /dist

# The hot path compiled with mypyc (docs/architecture.md#compiled-modules) from the wheel's own sources,
# with the wheel's dependencies installed for the type information; only the extensions and their
# build record go on (an empty archive if the build fell back: the image then runs pure Python).
FROM python:3.11-slim AS native
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl "mypy>=1.15" "setuptools>=65" "types-PyYAML>=6.0"
COPY pyproject.toml ./
COPY src ./src
COPY scripts/build_native.py ./scripts/
RUN python scripts/build_native.py --force \
    && cd src && find . -name '*.so' -o -name native-build.json | tar -cf /native.tar -T -

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    UPSELL_RULES_DIR=/app/rules UPSELL_HTTP_HOST=0.0.0.0 UPSELL_HTTP_PORT=8080 UPSELL_DATA_DIR=/var/lib/upsell
RUN useradd --system --uid 10001 --home /app upsell && mkdir -p /app /var/lib/upsell && chown upsell /var/lib/upsell
COPY --from=build /dist/*.whl /tmp/
COPY --from=native /native.tar /tmp/
RUN pip install --no-cache-dir /tmp/*.whl "rocksdict>=0.3.29" \
    && tar -xf /tmp/native.tar -C "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && rm /tmp/*.whl /tmp/native.tar
COPY rules /app/rules
WORKDIR /app
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["upsell-triggers"]
CMD ["run"]

# Multi-stage, slim, non-root. Build: docker build -t upsell-triggers .
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    UPSELL_RULES_DIR=/app/rules UPSELL_HTTP_HOST=0.0.0.0 UPSELL_HTTP_PORT=8080 UPSELL_DATA_DIR=/var/lib/upsell
RUN useradd --system --uid 10001 --home /app upsell && mkdir -p /app /var/lib/upsell && chown upsell /var/lib/upsell
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl "rocksdict>=0.3.29" && rm /tmp/*.whl
COPY rules /app/rules
WORKDIR /app
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["upsell-triggers"]
CMD ["run"]

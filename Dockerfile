# factorflow CPU image: the official Airflow image plus the project's pinned
# requirements. Used by every Airflow service in docker-compose.yml except the
# GPU worker (Dockerfile.gpu).
#
# The base tag must match the apache-airflow pin in requirements.txt
# (tests/test_deployment.py checks it); the explicit "apache-airflow==..." below
# makes the build fail rather than silently move Airflow if the two drift.
#
# Project code is not baked in: docker-compose.yml mounts dags/, plugins/
# (the factorflow package) and include/ (SQL + Great Expectations suites).
FROM apache/airflow:3.3.2-python3.11

# The image installs Python packages into the airflow user's virtualenv
# (/home/airflow/.local); pip refuses to run as root there, so stay airflow.
USER airflow

COPY --chown=airflow:0 requirements.txt /requirements.txt

# JAX runs on the CPU here (jaxlib's CPU wheel comes from requirements.txt).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt

ENV JAX_PLATFORMS=cpu \
    GX_ANALYTICS_ENABLED=false

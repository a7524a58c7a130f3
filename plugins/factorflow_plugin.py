"""The factorflow Airflow plugin: a "Model runs" page in the Airflow UI.

Airflow loads this file from the plugins folder (``factorflow/`` itself is a
library, see ``.airflowignore``). The api-server mounts the FastAPI app at
``/factorflow``; the external view embeds it in the UI's navigation.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from factorflow.airflow.ui import create_app


class FactorflowPlugin(AirflowPlugin):
    name = "factorflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/factorflow", "name": "factorflow"}]
    external_views = [{"name": "Model runs", "href": "/factorflow/", "url_route": "factorflow",
                       "destination": "nav", "category": "browse"}]

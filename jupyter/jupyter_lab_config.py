"""The course's JupyterLab set-up, loaded by ``make lab`` (``jupyter lab --config=...``) and by the browser test.

It changes nothing in the learner's own Jupyter configuration (``~/.jupyter``): JupyterLab reads the
course's default settings from ``settings/overrides.json`` next to this file, and the server asks no
website for news or for a newer JupyterLab -- the course runs offline, and opens without the
"Would you like to receive official Jupyter news?" question.
"""

from pathlib import Path

c = get_config()  # noqa: F821  (defined by the loader of Jupyter configuration files)

# overrides.json: the notification settings (news and update checks: never).
c.LabApp.app_settings_dir = str(Path(__file__).resolve().parent / "settings")
# No news feed and no update check from the server either.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"

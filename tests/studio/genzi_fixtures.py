"""The GenZI tab's test server (imported by the GenZI tab's test modules): no model folders, gallery previews
at 128 px (the view selection itself keeps GenZI's 512 px cameras)."""
from __future__ import annotations

import pytest

import studio.genzi as genzi_tab

from studio_servers import start_studio, stop


@pytest.fixture(scope="module")
def genzi_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("genzi-tab")
    (folder / "models").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(genzi_tab, "DEFAULT_CONFIG", genzi_tab.GenziTabConfig(preview_size=128))
        running, server = start_studio(folder / "models", folder)
    yield running
    stop(server, running)

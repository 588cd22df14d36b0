"""pytest only: run from a scratch folder, as trial runs from _trial_temp.

trial's ``TestCase.mktemp`` makes folders relative to the working folder;
under pytest that would litter the checkout.
"""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def scratch_folder(tmp_path_factory):
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(scope="session", autouse=True)
def postgres_server():
    """Stop the throwaway PostgreSQL server (started by the first test that needs one) at the end."""
    yield
    from tests import postgres_support

    postgres_support.stop()

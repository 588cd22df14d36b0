# The two commands a new user runs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= etc/cyrusmail.conf

.PHONY: run test test-postgresql test-postgresql-blobs bench lint clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,gssapi]' --config-settings editable_mode=compat || { \
	  echo "python-gssapi did not build (it needs libkrb5-dev and gcc): the GSSAPI tests will skip"; \
	  $(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat; }
	touch $@

## run: install into .venv and run the server in the foreground on the sample config
run: $(VENV)/.installed
	$(VENV)/bin/twistd --pidfile= -n cyrusmail --config $(CONFIG)

## test: install into .venv with test dependencies and run every test, then the
## real-twistd ones again with two worker processes
test: $(VENV)/.installed
	$(PY) -m pytest -q
	CYRUSMAIL_TEST_WORKERS=2 $(PY) -m pytest -q tests/test_twistd.py tests/test_crash_durability.py tests/test_sieve_twistd.py tests/test_observability.py

## test-postgresql: the protocol tests again, each server context on the PostgreSQL store (a throwaway server)
PROTOCOL_TESTS = tests/test_imap_*.py tests/test_pop3_*.py tests/test_lmtp.py tests/test_submission.py \
	tests/test_dsn.py tests/test_queue.py tests/test_sessions.py tests/test_session_regressions.py \
	tests/test_auth.py tests/test_auth_cache.py tests/test_user_delete.py tests/test_hidden_mailboxes.py \
	tests/test_sieve_delivery.py tests/test_sieve_language.py tests/test_managesieve.py tests/test_managesieve_clients.py
test-postgresql: $(VENV)/.installed
	CYRUSMAIL_TEST_STORE=postgresql $(PY) -m pytest -q $(PROTOCOL_TESTS)

## test-postgresql-blobs: the same, message bodies in a folder's files ([store] blobs = /folder)
test-postgresql-blobs: $(VENV)/.installed
	CYRUSMAIL_TEST_STORE=postgresql CYRUSMAIL_TEST_BLOBS=folder $(PY) -m pytest -q $(PROTOCOL_TESTS)

## bench: print speed figures (see bench/)
bench: $(VENV)/.installed
	$(PY) bench/run.py

lint: $(VENV)/.installed
	$(PY) -m pip install -q ruff && $(VENV)/bin/ruff check cyrusmail tests

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp

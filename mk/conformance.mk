# `make conformance`: regenerate conformance/vectors.json from a real server (conformance/README.md).
# Included by the main Makefile, which defines PYTHON, VENV, BIN and STAMP.
#
# The server runs in-process on a fresh database of AUTHSVC_TEST_DATABASE_URL, else on an embedded PostgreSQL.
# `make test` runs the file (tests/test_conformance.py, and the Node client's conformance test).

.PHONY: conformance

conformance: $(STAMP) ## regenerate conformance/vectors.json from a real server (AUTHSVC_TEST_DATABASE_URL or embedded)
	$(BIN)/python -m tests.generate_conformance

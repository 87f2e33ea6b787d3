"""Stands in for `keras` in the unit lane (`./test.sh unit` puts it first on PYTHONPATH): the
unit tests must pass without TensorFlow, so importing it fails."""

raise ImportError("keras cannot be imported in the unit lane (tests/unit): move a test that "
                  "needs it to tests/integration")

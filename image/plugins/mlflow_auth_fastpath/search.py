"""search_runs for a regular user: the same response filter, without re-reading every page.

What MLflow 3.17.2's basic-auth app does to ``POST /runs/search`` (``mlflow/server/auth/__init__.py``):

* before the query, ``search_runs_impl`` narrows the requested experiment ids to the ones the
  caller may read (``filter_experiment_ids``): one grants query, and the store's query and page
  token are computed over that narrowed list. Unchanged here.
* after the query, ``_after_request`` runs ``redact_search_runs_model_links``: for a non-admin it
  parses the whole JSON page (``resp.json``) into a ``SearchRuns.Response`` protobuf
  (``parse_dict``) only to look for run -> logged-model links (``inputs.model_inputs``,
  ``outputs.model_outputs``, a metric's ``model_id``); if some run has one and the caller is
  denied logged models, it clears them and writes the JSON again. For a 1,000-run page that
  parse is most of what auth adds to the call (profiled: docs/performance.md).

The change: the filter first looks at the response's bytes. A page in which none of those three
field names occurs (as JSON key, in proto or JSON-name spelling, and with no ``\\u00XX`` escape
that could spell one) has no link to withhold, so MLflow's filter would leave it unchanged:
it is returned as it is. Any other page goes through MLflow's own filter, unchanged. The
decisions, the bytes of every response and the page tokens are therefore MLflow's.
"""

from __future__ import annotations

import functools
import re

# The JSON keys whose presence can make MLflow's filter change a page: both spellings ParseDict
# accepts (the proto field name, which message_to_json writes, and the lowerCamel JSON name).
_MARKERS = (b'"model_inputs"', b'"modelInputs"', b'"model_outputs"', b'"modelOutputs"',
            b'"model_id"', b'"modelId"')
# A \u escape of a printable ASCII character could spell a key in a way the markers miss (json.dumps
# never writes one for a letter or "_", but a page that has one goes to MLflow's filter).
_ASCII_ESCAPE = re.compile(rb"\\u00[2-7][0-9a-fA-F]")


def may_hold_model_links(body: bytes) -> bool:
    """False only if no run in this JSON page can carry a model input/output or a metric model_id."""
    return any(marker in body for marker in _MARKERS) or _ASCII_ESCAPE.search(body) is not None


def _skip_pages_without_links(redact):
    @functools.wraps(redact)
    def redact_search_runs(resp) -> None:
        if resp.is_streamed or may_hold_model_links(resp.get_data()):
            return redact(resp)
        return None

    redact_search_runs._mlflow_auth_fastpath_original = redact
    return redact_search_runs


def install(auth) -> None:
    """Route MLflow's search_runs response filter through :func:`may_hold_model_links` in every
    table ``_after_request`` dispatches from (the REST and the ajax paths)."""
    original = auth.redact_search_runs_model_links
    if hasattr(original, "_mlflow_auth_fastpath_original"):
        return
    fast = _skip_pages_without_links(original)
    for table in (auth.AFTER_REQUEST_PATH_HANDLERS, auth.AFTER_REQUEST_HANDLERS,
                  auth.PARAMETERIZED_AFTER_REQUEST_HANDLERS):
        for key, handler in table.items():
            if handler is original:
                table[key] = fast
    auth.redact_search_runs_model_links = fast

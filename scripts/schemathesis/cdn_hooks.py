"""schemathesis hooks for running the provider's own API description
(REST-API-v1.json, Swagger 2.0) against purgeq's CDN emulator.

Every generated request is signed as the official samples sign: the path,
the sorted query as `name:value`, the request date and the method, joined
by CRLF, HMAC-SHA256 with the key value, upper-case hex. The subscription
is the emulator's and `apiVersion` is 1.0, so the generated bodies and ids
reach the emulator's own checks instead of stopping at the door. Ids in
paths are mapped to URL-safe text (a digest of what was generated), or,
for half of the progress queries, to a TaskTrackId the emulator answered
earlier; and half of the purge and preload bodies are made valid (their
generated lists become URLs of the emulated host, derived from what was
generated), so the success paths and their answers' shapes are exercised
too.

Read by scripts/cdn_schemathesis.sh through SCHEMATHESIS_HOOKS.
"""

import datetime
import hashlib
import hmac
import os

import schemathesis

SUBSCRIPTION = os.environ["PURGEQ_ST_SUBSCRIPTION"]
ENDPOINT = os.environ["PURGEQ_ST_ENDPOINT"]
KEY_ID = os.environ["PURGEQ_ST_KEY_ID"]
KEY_VALUE = os.environ["PURGEQ_ST_KEY_VALUE"]

ID_PARAMETERS = ("purgeId", "preloadId", "operationId")
SEEN_TASKS = []


def string_to_sign(method, path, query, date):
    query_line = ", ".join(f"{k}:{v}" for k, v in sorted(query.items()))
    return "\r\n".join([path, query_line, date, method.upper()])


def signature(message):
    digest = hmac.new(KEY_VALUE.encode(), message.encode(), hashlib.sha256)
    return digest.hexdigest().upper()


def url_safe(value):
    return hashlib.sha1(str(value).encode()).hexdigest()


def well_typed(body):
    """A body schemathesis generated as valid (its lists are lists of
    strings): only those are made valid URLs. Deliberately invalid ones
    (the negative tests) stay as generated, to be refused."""
    if not isinstance(body, dict):
        return False
    lists = [body[k] for k in ("Files", "Directories") if k in body]
    return all(isinstance(v, list) and all(isinstance(u, str) for u in v) for v in lists)


@schemathesis.auth()
class AzureCdnSignature:
    def get(self, case, ctx):
        return KEY_ID

    def set(self, case, data, ctx):
        params = case.path_parameters or {}
        params["subscriptionId"] = SUBSCRIPTION
        if "endpointId" in params:
            params["endpointId"] = ENDPOINT
        for name in ID_PARAMETERS:
            if name in params:
                original = url_safe(params[name])
                use_seen = SEEN_TASKS and int(original[0], 16) % 2 == 0
                params[name] = SEEN_TASKS[int(original[1:9], 16) % len(SEEN_TASKS)] if use_seen else original
        case.path_parameters = params
        if case.method.upper() == "POST" and well_typed(case.body):
            seed = url_safe(case.body)
            if int(seed[0], 16) % 2 == 0:
                body = dict(case.body)
                count = 1 + int(seed[1], 16) % 3
                body["Files"] = [f"http://example.com/st/{seed[2:10]}/{i}.js" for i in range(count)]
                if "purges" in case.path and int(seed[10], 16) % 2 == 0:
                    body["Directories"] = [f"http://example.com/st/{seed[11:19]}/"]
                case.body = body
        case.query = {"apiVersion": "1.0"}
        path = case.formatted_path
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        headers = case.headers or {}
        headers["x-azurecdn-request-date"] = date
        headers["Authorization"] = (
            f"AzureCDN {data}:{signature(string_to_sign(case.method, path, case.query, date))}"
        )
        case.headers = headers


@schemathesis.hook
def after_call(ctx, case, response):
    """Remembers every TaskTrackId the emulator answered."""
    try:
        body = response.json()
    except Exception:
        return
    if isinstance(body, dict):
        task = (body.get("AsyncInfo") or {}).get("TaskTrackId")
        if isinstance(task, str) and task not in SEEN_TASKS:
            SEEN_TASKS.append(task)

"""Where the gateway under test listens, and how a script reports (see run.sh)."""
import http.client, os, sys

H = "127.0.0.1"
P = int(os.environ["FUZZ_PORT"])
FLIGHT = f"grpc://127.0.0.1:{os.environ['FUZZ_FLIGHT_PORT']}"
ADMIN = os.environ["FUZZ_ADMIN_KEY"]


def request(method, path, body=None, key=ADMIN, content_type="application/json", headers=None):
    """One request on a fresh connection, with `key` as the bearer token (none: anonymous):
    (status, content type, body bytes)."""
    h = {"content-type": content_type, **(headers or {})}
    if key:
        h["Authorization"] = "Bearer " + key
    c = http.client.HTTPConnection(H, P, timeout=120)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    return r.status, r.getheader("content-type", ""), r.read()


def finish(bad, describe=lambda b: str(b)[:400], limit=20):
    """Prints the findings (deduplicated by their description's start); exits 1 if any."""
    print("findings:", len(bad))
    seen = set()
    for b in bad:
        d = describe(b)
        if d[:120] in seen:
            continue
        seen.add(d[:120])
        print("  ", d)
        if len(seen) >= limit:
            break
    sys.exit(1 if bad else 0)

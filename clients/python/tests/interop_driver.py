"""Drives the package for tests/interop.rs (Rust worker on the other side):

    interop_driver.py URL NAMESPACE QUEUE produce          # prints one job id per line
    interop_driver.py URL NAMESPACE QUEUE inspect ID...    # prints one JSON line per id: state, result, attempts
"""

import json
import sys

from support import rill  # noqa: F401  (puts the package on the path)


def main():
    url, ns, queue, cmd = sys.argv[1:5]
    q = rill.Client(url, namespace=ns).queue(queue)
    if cmd == "produce":
        ids = [
            q.enqueue({"to": "plain@example.com", "n": 0}),
            q.enqueue({"to": "named@example.com", "n": 1}, id="py-named", max_attempts=2),
            q.enqueue({"to": "tenant@example.com", "n": 2}, dedup_key="py-dedup", headers={"x-tenant": "acme"}),
            q.enqueue({"to": "later@example.com", "n": 3}, delay=0.3, timeout=30),
        ]
        dup = q.enqueue_outcome({"to": "again@example.com", "n": 9}, id="py-named")
        assert dup.duplicate and dup.id == "py-named", dup
        print("\n".join(ids))
    elif cmd == "inspect":
        for jid in sys.argv[5:]:
            info = q.job(jid)
            print(json.dumps({"id": jid, "state": info.state, "result": info.decoded_result(),
                              "attempts": info.attempts}))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()

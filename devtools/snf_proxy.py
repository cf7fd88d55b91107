"""The do-it-yourself reference: a store-and-forward DICOM proxy written with pynetdicom.

Each incoming C-STORE is decoded into a data set and sent on over an association of its own to the
upstream SCP (one upstream association per incoming one). It is what a quick in-house proxy looks
like, and the benchmark's yardstick for what the agents' byte-forwarding design saves.

    python -m devtools.snf_proxy --listen 11150 --to 127.0.0.1:11112 [--aet SNF] [--upstream-aet STORESCP]
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="snf_proxy")
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--aet", default="SNF")
    parser.add_argument("--upstream-aet", default="STORESCP")
    args = parser.parse_args(argv)
    host, port = args.to.rsplit(":", 1)
    upstream = AE(ae_title=args.aet)
    upstream.requested_contexts = AllStoragePresentationContexts[:127]
    links: dict[int, Any] = {}
    lock = threading.Lock()

    def forward(event: Any) -> int:
        key = id(event.assoc)
        with lock:
            link = links.get(key)
            if link is None or not link.is_established:
                link = upstream.associate(host, int(port), ae_title=args.upstream_aet)
                links[key] = link
        if not link.is_established:
            return 0xA700  # out of resources: the upstream refused us
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        status = link.send_c_store(dataset)
        return int(getattr(status, "Status", 0xA700))

    def released(event: Any) -> None:
        with lock:
            link = links.pop(id(event.assoc), None)
        if link is not None and link.is_established:
            link.release()

    scp = AE(ae_title=args.aet)
    scp.supported_contexts = AllStoragePresentationContexts
    scp.maximum_associations = 20
    print(f"snf_proxy: listening on {args.listen}, forwarding to {args.to}", file=sys.stderr, flush=True)
    scp.start_server(("127.0.0.1", args.listen), block=True,
                     evt_handlers=[(evt.EVT_C_STORE, forward), (evt.EVT_RELEASED, released),
                                   (evt.EVT_ABORTED, released)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``medlite serve``: the cart as a DICOM node. Images in by C-STORE, a DICOM SR out per image, forwarded."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .shared import EXIT_OK, load_model, model_args, whole_number


def destination(text: str):
    from medlite.edge.outbox import Destination

    try:
        return Destination.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub, common) -> None:
    p = sub.add_parser("serve", parents=[common], help="run a model as a DICOM Storage SCP that answers in SRs",
                       description="A DICOM node: the modality sends images by C-STORE; each is written to disk "
                                   "before it is acknowledged, analysed off the association's thread, and "
                                   "answered by a DICOM Structured Report (TID 1500) in OUT/reports, which "
                                   "--forward delivers to the PACS from a durable outbox. Stop with Ctrl-C or "
                                   "SIGTERM; a restart finishes whatever was received and not yet reported.")
    model_args(p)
    p.add_argument("--out", required=True, type=Path, help="the node's folder: incoming/, reports/, outbox/")
    p.add_argument("--port", type=whole_number(0, 65535), default=11112,
                   help="TCP port (default 11112; 0: any free port)")
    p.add_argument("--ae-title", default="MEDLITE", help="this node's AE title (default MEDLITE)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--allow", nargs="+", metavar="CALLING_AET", default=(),
                   help="accept associations only from these calling AE titles")
    p.add_argument("--forward", type=destination, metavar="HOST:PORT:AET",
                   help="send every report to this C-STORE SCP (the PACS), retrying while it is down")
    p.add_argument("--tls-cert", help="PEM certificate: serve DICOM over TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-ca", help="PEM CA bundle: require senders to present a certificate it signed")
    p.add_argument("--forward-tls-ca", metavar="PEM",
                   help="send reports to the PACS over TLS, its certificate checked against this CA bundle")
    p.add_argument("--forward-tls-cert", metavar="PEM",
                   help="client certificate shown to the PACS (with --forward-tls-key; default: --tls-cert)")
    p.add_argument("--forward-tls-key", metavar="PEM", help="private key of --forward-tls-cert")
    p.add_argument("--workers", type=whole_number(0, 64), default=2,
                   help="processes that decode images, 0 to 64 (default 2; 0: the analysis thread decodes)")
    p.add_argument("--give-up-after", type=whole_number(1, 100), default=3, metavar="N",
                   help="an image whose analysis fails N times, restarts included, goes to failed/ with a report "
                        "saying it could not be analysed (default 3)")
    p.add_argument("--no-heatmap", dest="heatmap", action="store_false",
                   help="make no heatmap: by default, where the model gives a feature map, a report marks the "
                        "heatmap's peak and box on the image, and the heatmap goes to the study as a picture over "
                        "the image (Secondary Capture) and, for a single-frame image, as a Segmentation")
    p.set_defaults(run=run)


def run(args) -> int:
    from medlite.commands.shared import UsageError
    from medlite.edge.node import Node, Settings

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if bool(args.forward_tls_cert) != bool(args.forward_tls_key):
        raise UsageError("--forward-tls-cert and --forward-tls-key go together")
    if (args.forward_tls_ca or args.forward_tls_cert) and not args.forward:
        raise UsageError("--forward-tls-ca and --forward-tls-cert are for --forward")
    for flag in ("tls_cert", "tls_key", "tls_ca", "forward_tls_ca", "forward_tls_cert", "forward_tls_key"):
        path = getattr(args, flag)
        if path and not Path(path).is_file():
            raise UsageError(f"--{flag.replace('_', '-')}: no such file {path}")
    if not 0 < len(args.ae_title) <= 16:
        raise UsageError("--ae-title must be 1 to 16 characters")
    _log_to_stderr(args)
    model = load_model(args)
    settings = Settings(out=args.out, port=args.port, ae_title=args.ae_title, bind=args.bind,
                        allow=tuple(args.allow), forward=args.forward, tls_cert=args.tls_cert,
                        tls_key=args.tls_key, tls_ca=args.tls_ca, workers=args.workers,
                        give_up_after=args.give_up_after, heatmap=args.heatmap, forward_tls_ca=args.forward_tls_ca,
                        forward_tls_cert=args.forward_tls_cert, forward_tls_key=args.forward_tls_key)
    node = Node(model, settings)
    log = logging.getLogger("medlite.serve")
    log.info("model %s (%s, SHA-256 %s) on %s; intended use: %s", args.model, node.algorithm["variant"],
             model.sha256[:16], model.backend, model.contract.intended_use.describe())
    if model.signed_by:
        log.info("signed by trusted key %s", model.signed_by)
    try:
        node.start()
    except OSError as e:
        raise UsageError(f"cannot listen on {args.bind}:{args.port}: {e.strerror or e}") from None
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (medlite.cli raises it the same way): the normal way to stop
        log.info("stopping: no new associations; images not yet reported stay in %s", node.dirs["incoming"])
        node.stop()
        log.info("stopped")
    return EXIT_OK


def _log_to_stderr(args) -> None:
    """One line per event on standard error; pynetdicom's own chatter only with --verbose."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.getLogger("medlite.serve")
    log.addHandler(handler)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    logging.getLogger("pynetdicom").setLevel(logging.INFO if args.verbose else logging.CRITICAL)

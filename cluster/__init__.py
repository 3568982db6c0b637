"""medlite.cluster: medlite's records and accuracy over an archive, on a Ray cluster (``pip install
'medlite[ray]'``). It stands on medlite.measure and medlite.edge; nothing below it imports Ray."""

if __name__ != "medlite.cluster":
    raise ImportError(f"import medlite.cluster, not {__name__}")

"""medlite.measure: labelled data sets (found or downloaded), the bench, the report and the selection.

What a workstation or a cart runs to compare variants; it stands on medlite.edge and never imports TensorFlow.
"""

if __name__ != "medlite.measure":
    raise ImportError(f"import medlite.measure, not {__name__}")

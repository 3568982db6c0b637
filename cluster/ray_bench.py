"""``medlite bench --engine ray --accuracy-only``: a labelled split's accuracy, scored by actors on a Ray cluster.

The split's images go once into Ray's object store; for each model a pool of actors, each holding the model
loaded once (on the CPU), scores them in order through ``Model.classify``, and the driver computes the metrics
with the same function as a local bench (``measure.bench.accuracy_of``), so the rows are the local bench's
accuracy, to the bit. Latency is not measured: it belongs to one device, not a cluster.
"""

from __future__ import annotations

import numpy as np

from medlite.measure.bench import accuracy_of, agreement_with_fp32, frame_of

IMAGES_PER_CALL = 256


class Prober:
    """One actor: a model loaded once from the driver's bytes; images in, their class scores out."""

    def __init__(self, model: bytes, threads: int | None):
        from medlite.edge import load

        self.model = load(model, backend="cpu", threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        m = self.model
        return {"scores": np.stack([m.classify(m.prepare(frame_of(img))).score_array for img in batch["data"]])}


def accuracy_rows(paths: list[str], split, *, actors: int, threads: int | None = None, seed: int = 0,
                  progress=None) -> list[dict]:
    """One report row per model (backend cpu): its metrics on ``split``, agreement with fp32 included."""
    import ray.data

    from medlite.edge import read_contract

    # One copy in the object store, read by every model's actors, in blocks that the actors share out.
    images = ray.data.from_numpy(np.array_split(split.images, -(-len(split.images) // IMAGES_PER_CALL)))
    rows = []
    for path in paths:
        if progress:
            progress(f"accuracy on the cluster: {path}, {actors} actor(s)")
        with open(path, "rb") as f:
            data = f.read()
        c = read_contract(data, path)  # checked here, before any actor starts
        scores = images.map_batches(Prober, fn_constructor_args=(data, threads), batch_size=IMAGES_PER_CALL,
                                    compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads or 1)
        probs = np.concatenate([b["scores"] for b in scores.iter_batches(batch_format="numpy")])
        metrics, decisions = accuracy_of(c, split.labels, probs, seed)
        rows.append({"variant": c.provenance.get("variant", "unknown"), "backend": "cpu", "threads": threads or 1,
                     "model": str(path), "size_bytes": len(data), "metrics": metrics, "labels": list(c.labels),
                     "_decisions": decisions})
    agreement_with_fp32(rows)
    return rows

"""The client side of an export: submit chunks incrementally, bounded, then finalise.

Per chunk of ``chunk_size`` ROIs the engine submits one fetch task per input
key (resource ``io`` when the cluster has it), one inference task per model
(resource ``gpu`` when the cluster has it) and one write task.  Resource-
restricted tasks are not queued by the scheduler, so the engine applies its
own backpressure: at most ``max_in_flight`` chunks and at most ``fetch_slots``
fetch tasks are outstanding, which keeps client and worker memory flat for
any number of ROIs and caps concurrent provider requests across the cluster.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rs_embed_dask.core.registry import get_provider_class
from rs_embed_dask.core.types import ExportLayout
from rs_embed_dask.export import tasks
from rs_embed_dask.export.blocks import as_block
from rs_embed_dask.export.identity import check_resume_identity, resume_identity
from rs_embed_dask.export.inline import active_client, inline_client, run_in_process
from rs_embed_dask.export.killed import killed_worker_error
from rs_embed_dask.export.lock import target_lock
from rs_embed_dask.export.npz_parts import parts_dir
from rs_embed_dask.export.paths import check_workers_see
from rs_embed_dask.export.per_item import item_done, item_paths, write_chunk_per_item
from rs_embed_dask.export.plan import ExportPlan
from rs_embed_dask.export.progress import Progress
from rs_embed_dask.export.sizing import chunk_sizing, flight_limits
from rs_embed_dask.export.store import OK, OK_RAGGED, UNBOUNDED, drop_consolidated, open_root, resize_items
from rs_embed_dask.export.tidy import (
    read_folder_manifest,
    remove_stale_tmp,
    write_folder_manifest,
)
from rs_embed_dask.export.zarr_views import drop_views
from rs_embed_dask.serialization import jsonable, sanitize_key, utc_timestamp

__all__ = ["run_export"]


def _chunks(plan: ExportPlan) -> Iterator[tuple[int, Sequence[Any]]]:
    size = plan.items_per_chunk
    it = iter(plan.spatials)
    start = 0
    while True:
        block = list(itertools.islice(it, size))
        if not block:
            return
        yield start, as_block(block)
        start += len(block)


def _work_store_path(plan: ExportPlan) -> str:
    assert plan.out_file is not None
    if plan.fmt == "zarr":
        return plan.out_file
    return plan.out_file + ".work.zarr"


def _static_models(plan: ExportPlan) -> list[dict[str, Any]]:
    from rs_embed_dask.core.registry import get_model_class

    out = []
    for m in plan.models:
        try:
            desc = jsonable(get_model_class(m.canonical)(m.config_dict).describe())
        except Exception as exc:  # pragma: no cover - describe failed after validation
            desc = {"error": repr(exc)}
        out.append(
            {"name": m.name, "input_key": plan.input_key_of(m.name), "sensor": jsonable(m.sensor), "describe": desc}
        )
    return out


def _product_provider(model: Any) -> str | None:
    """The provider a precomputed product reads through (``PrecomputedEmbedder.provider``)."""
    from rs_embed_dask.core.registry import get_model_class

    return getattr(get_model_class(model.canonical), "provider", None)


class _Submitter:
    """Submits the tasks of one chunk with the right resources and caps."""

    def __init__(self, client: Any, plan: ExportPlan) -> None:
        from rs_embed_dask.cluster import cluster_resources

        self.client = client
        self.plan = plan
        res = cluster_resources(client)
        self.io = {"io": 1} if res.get("io") else None
        self.gpu = {"gpu": 1} if res.get("gpu") else None
        n_gpu = int(res.get("gpu", 0)) or max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        cfg = plan.config
        cap = int(cfg.num_workers)
        # (name, max_leases) of each provider's cluster-wide distributed.Semaphore: plain values;
        # each worker process builds its Semaphore inside a task (tasks.process_semaphore), where
        # it binds to the worker and refreshes its leases (a shipped one is rebuilt outside that
        # context and never refreshes them, so leases of long fetches expired after 30 s)
        self.semaphores: dict[str, tuple[str, int]] = {}
        for backend in {m.backend for m in plan.models if not m.is_precomputed}:
            pcls = get_provider_class(backend)
            pmax = pcls.concurrency_limit(plan.provider_options)
            plugin = pcls.worker_plugin(plan.provider_options)  # e.g. Earth Engine init on every worker
            if plugin is not None:
                client.register_plugin(plugin)
            if pmax is not None:
                cap = min(cap, int(pmax))
                self.semaphores[backend] = (f"rs-embed-dask-provider-{backend}", int(pmax))
        # precomputed products that read through a provider (gse: Earth Engine) take the same
        # semaphore in their infer tasks, one ROI per lease (model name -> (name, max_leases))
        self.infer_semaphores: dict[str, tuple[str, int]] = {}
        for m in plan.models:
            via = _product_provider(m) if m.is_precomputed else None
            if via is None:
                continue
            if via not in self.semaphores:
                pmax = get_provider_class(via).concurrency_limit(plan.provider_options)
                if pmax is None:
                    continue
                self.semaphores[via] = (f"rs-embed-dask-provider-{via}", int(pmax))
            self.infer_semaphores[m.name] = self.semaphores[via]
        self.threads, self.fetch_slots, self.max_in_flight = flight_limits(plan.items_per_chunk, cap, n_gpu)
        self.run_id = uuid.uuid4().hex[:8]

    def _key(self, kind: str, start: int, name: str = "") -> str:
        return f"rsembed-{kind}-{sanitize_key(name)}-{start}-{self.run_id}"

    def fetches(self, start: int, block: list[Any]) -> dict[str, Any]:
        plan, cfg = self.plan, self.plan.config
        futs = {}
        for key, spec in plan.inputs.items():
            futs[key] = self.client.submit(
                tasks.fetch_chunk,
                spec.model,
                key,
                block,
                plan.temporal,
                provider_options=plan.provider_options,
                max_retries=cfg.max_retries,
                backoff_s=cfg.retry_backoff_s,
                continue_on_error=cfg.continue_on_error,
                semaphore=self.semaphores.get(spec.model.backend),
                threads=self.threads,
                plugins=plan.plugins,
                resources=self.io,
                key=self._key("fetch", start, key),
                pure=False,
            )
        return futs

    def for_writes(self, start: int, fetched: dict[str, Any]) -> dict[str, Any]:
        """The fetches as the write task needs them: without the arrays unless they are saved.

        A chunk's pixels then stay where they were fetched (and on the inference
        workers) and are freed once inference has them; the write gets statuses,
        metas and errors (:func:`tasks.without_data`, run beside the fetch).
        """
        if self.plan.config.save_inputs:
            return fetched
        return {
            key: self.client.submit(
                tasks.without_data, fut, resources=self.io, key=self._key("meta", start, key), pure=False
            )
            for key, fut in fetched.items()
        }

    def infers(self, start: int, block: list[Any], fetched: dict[str, Any]) -> dict[str, Any]:
        plan, cfg = self.plan, self.plan.config
        futs: dict[str, Any] = {}
        if not cfg.save_embeddings:
            return futs
        for m in plan.models:
            key = plan.input_key_of(m.name)
            futs[m.name] = self.client.submit(
                tasks.infer_chunk,
                m,
                fetched.get(key) if key else None,
                block,
                plan.temporal,
                start=start,
                output=plan.output,
                device=plan.device,
                input_prep=plan.input_prep,
                batch_size=cfg.effective_infer_batch_size,
                max_retries=cfg.max_retries,
                backoff_s=cfg.retry_backoff_s,
                continue_on_error=cfg.continue_on_error,
                plugins=plan.plugins,
                name_model_in_errors=plan.layout != ExportLayout.COMBINED,
                semaphore=self.infer_semaphores.get(m.name),
                # precomputed products read files or services and need no GPU: io workers
                resources=self.io if m.is_precomputed else self.gpu,
                key=self._key("infer", start, m.name),
                pure=False,
            )
        return futs


def run_export(plan: ExportPlan, *, client: Any = None) -> list[dict[str, Any]] | dict[str, Any]:
    """Run a validated export plan on ``client`` (or an embedded local cluster).

    The target's lock (:mod:`rs_embed_dask.export.lock`) is held from before
    the cluster starts until the export is finished: a second writer of the
    same target is refused with :class:`~rs_embed_dask.core.errors.ExportLockedError`.
    Temporary files that killed writers left behind are removed first.
    """
    from rs_embed_dask.cluster import export_client

    target = plan.out_file if plan.layout == ExportLayout.COMBINED else plan.out_dir
    assert target is not None
    with target_lock(target):
        remove_stale_tmp(plan)
        plan.identity = resume_identity(plan, _static_models(plan))
        # a streamed request's fingerprint cannot cover its ROIs: never short-circuit it (its
        # finished chunks are still skipped, ROI by ROI, when the working store remains)
        if plan.layout == ExportLayout.COMBINED and plan.config.resume and plan.spatials_in_fingerprint:
            done = _combined_already_done(plan)
            if done is not None:
                return done
        if run_in_process(plan, client):  # a few chunks: no cluster to start
            runner = inline_client()
        else:
            runner = export_client(client, io_threads=max(2, min(plan.config.num_workers, 32)))
        external = client is not None or active_client() is not None
        with runner as cl:
            plan.chunk_items = chunk_sizing(plan, cl).items  # a combined store being resumed keeps its own
            if external and not getattr(cl, "in_process", False):
                # a client of someone else's cluster: its workers may not see this machine's folders
                folder = target if plan.layout == ExportLayout.PER_ITEM else os.path.dirname(target)
                check_workers_see(cl, folder, what="the export target's folder")
            if plan.layout == ExportLayout.PER_ITEM:
                return _run_per_item(cl, plan)
            return _run_combined(cl, plan)


def _drain(
    client: Any, sub: _Submitter, inflight: dict[Any, tuple[int, int]], fetch_pending: set[Any],
    progress: Progress, results: list[Any], *, block_until: int, fetch_block_until: int, finished: Any,
) -> None:  # fmt: skip
    """Wait until fewer than the limits are outstanding; collect finished writes.

    ``finished`` is a ``distributed.as_completed`` on ``client``'s loop that tracks every
    outstanding future: ``distributed.wait`` would need ``client`` to be the default client.
    """
    while len(inflight) > block_until or len(fetch_pending) > fetch_block_until:
        next(finished)  # blocks until an outstanding future is done
        finished.next_batch(block=False)  # the others already done are found by the scans below
        for f in [f for f in fetch_pending if f.done()]:
            fetch_pending.discard(f)
        for f in [f for f in inflight if f.done()]:
            _start, n = inflight.pop(f)
            if f.status == "error":
                exc = f.exception()
                for g in list(inflight) + list(fetch_pending):
                    g.cancel()
                progress.close()
                killed = killed_worker_error(exc, sub.plan.config)  # a worker died: name what to lower
                if killed is not None:
                    raise killed from exc
                raise exc
            res = f.result()
            results.append(res)
            progress.update_from(res, n)
            f.release()


def _run_chunks(client: Any, plan: ExportPlan, submit_write: Any, chunk_iter: Iterator[Any], progress: Progress) -> list[Any]:
    sub = _Submitter(client, plan)
    inflight: dict[Any, tuple[int, int]] = {}
    fetch_pending: set[Any] = set()
    results: list[Any] = []
    from distributed import as_completed

    # an in-process run (export.inline) has every future done when submitted
    finished = client.as_completed() if getattr(client, "in_process", False) else as_completed(loop=client.loop)
    for start, block, extra in chunk_iter:
        _drain(client, sub, inflight, fetch_pending, progress, results,
               block_until=sub.max_in_flight - 1, fetch_block_until=sub.fetch_slots - 1, finished=finished)  # fmt: skip
        fetched = sub.fetches(start, block)
        fetch_pending.update(fetched.values())
        finished.update(fetched.values())
        inferred = sub.infers(start, block, fetched)
        to_write = sub.for_writes(start, fetched)
        wfut = submit_write(client, start, block, to_write, inferred, extra, sub)
        inflight[wfut] = (start, len(block))
        finished.add(wfut)
        del fetched, inferred, to_write
    _drain(client, sub, inflight, fetch_pending, progress, results, block_until=0, fetch_block_until=0, finished=finished)
    return results


# -- per-item layout ------------------------------------------------------------------------
def _run_per_item(client: Any, plan: ExportPlan) -> list[dict[str, Any]]:
    cfg = plan.config
    assert plan.out_dir is not None
    os.makedirs(plan.out_dir, exist_ok=True)
    statics = _static_models(plan)
    folder = read_folder_manifest(plan.out_dir)
    if cfg.resume and folder is not None:
        check_resume_identity(
            folder.get("resume_identity"), plan.identity, where=f"the per-item folder {plan.out_dir!r}",
            stored_fingerprint=folder.get("request_fingerprint"), fingerprint=plan.fingerprint,
        )  # fmt: skip
    write_folder_manifest(plan, complete=False, n_items=plan.n_items)
    progress = Progress(plan.n_items, enabled=cfg.show_progress, client=client, desc="export_batch")
    skipped: list[dict[str, Any]] = []

    def chunk_iter() -> Iterator[Any]:
        size = plan.items_per_chunk
        pending: list[tuple[int, str, Any]] = []
        for i, sp in enumerate(plan.spatials):
            name = plan.names[i] if plan.names is not None else f"p{i:05d}"
            if cfg.resume:
                from rs_embed_dask.export.manifest import item_fingerprint

                prev = item_done(plan.out_dir, name, plan.fmt, item_fingerprint(plan.fingerprint_base, sp), cfg.save_manifest)  # type: ignore[arg-type]
                if prev is not None:
                    arr_path, _ = item_paths(plan.out_dir, name, plan.fmt)  # type: ignore[arg-type]
                    skipped.append({**prev, "point_index": prev.get("point_index", i), "resume_skipped": True, "resume_output_path": arr_path})
                    progress.skip(1)
                    continue
            pending.append((i, name, sp))
            if len(pending) == size:
                yield pending[0][0], as_block([p[2] for p in pending]), pending
                pending = []
        if pending:
            yield pending[0][0], as_block([p[2] for p in pending]), pending

    def submit_write(client: Any, start: int, block: list[Any], fetched: Any, inferred: Any, extra: Any, sub: _Submitter) -> Any:
        return client.submit(
            write_chunk_per_item,
            plan.out_dir,
            [p[1] for p in extra],
            [p[0] for p in extra],
            block,
            fetched,
            inferred,
            models=statics,
            fmt=plan.fmt,
            save_inputs=cfg.save_inputs,
            save_manifest=cfg.save_manifest,
            backend=plan.backend,
            device=plan.device,
            temporal=plan.temporal,
            output=plan.output,
            fingerprint_base=plan.fingerprint_base,
            max_retries=cfg.max_retries,
            backoff_s=cfg.retry_backoff_s,
            key=sub._key("write", start),
            resources=sub.io,  # IO work: never on the inference workers, which hold the model's cores
            pure=False,
        )

    results = _run_chunks(client, plan, submit_write, chunk_iter(), progress)
    progress.close()
    manifests = [m for chunk in results for m in chunk] + skipped
    n_items = plan.n_items if plan.n_items is not None else len(manifests)
    write_folder_manifest(plan, complete=True, n_items=n_items)
    return sorted(manifests, key=lambda m: m.get("point_index", 0))


# -- combined layouts (npz / netcdf / zarr) -------------------------------------------------------
def _combined_already_done(plan: ExportPlan) -> dict[str, Any] | None:
    import json

    assert plan.out_file is not None
    stem = plan.out_file[: -len(os.path.splitext(plan.out_file)[1])]
    sidecar = stem + ".json"
    if not os.path.exists(plan.out_file) or not os.path.exists(sidecar):
        return None
    try:
        with open(sidecar, encoding="utf-8") as f:
            man = json.load(f)
    except (OSError, ValueError):
        return None
    if man.get("resume_incomplete") or man.get("request_fingerprint") != plan.fingerprint:
        return None
    if man.get("status") != "ok":
        return None  # failed items are retried (the working store of the failed ones is kept)
    if plan.fmt == "zarr":
        try:
            attrs = dict(open_root(plan.out_file).attrs).get("rs_embed_dask", {})
        except Exception:
            return None
        if not attrs.get("complete"):
            return None
        check_resume_identity(
            attrs.get("resume_identity"), plan.identity, where=f"the zarr export {plan.out_file!r}",
            stored_fingerprint=attrs.get("request_fingerprint"), fingerprint=plan.fingerprint,
        )  # fmt: skip
    return {**man, "resume_skipped": True, "resume_output_path": plan.out_file}


def _chunk_done(statuses: list[Any], start: int, n: int) -> bool:
    # numpy columns, or lazy zarr arrays for a streamed store (item capacity UNBOUNDED)
    # only items that succeeded count: failed ones are retried on resume, as rs-embed reruns partial models
    return bool(statuses) and all(
        s is not None and s.shape[0] >= start + n and np.isin(np.asarray(s[start : start + n]), (OK, OK_RAGGED)).all()
        for s in statuses
    )


def _input_parts_intact(plan: ExportPlan, store_path: str, start: int, n: int) -> bool:
    """For an NPZ target with saved inputs: every input's part of the chunk is whole (they are its only copy)."""
    from rs_embed_dask.export.npz_parts import part_intact
    from rs_embed_dask.export.store import array_exists

    if plan.fmt != "npz" or not plan.config.save_inputs:
        return True
    names = [f"inputs/{key}/data" for key in plan.inputs]
    return all(part_intact(store_path, name, start, n) for name in names if array_exists(store_path, name))


def _same_spatials(plan: ExportPlan, store_path: str, start: int, block: Sequence[Any], *, check: bool = False) -> bool:
    """Whether a finished chunk of the store holds these ROIs.

    A listed request's fingerprint covers its spatials; a streamed one's cannot
    (``"spatials": "streamed"``), so its chunks are checked one by one on resume
    (``check``: also a listed request resuming a streamed one's store).
    """
    if plan.spatials_in_fingerprint and not check:
        return True
    import json

    import zarr

    try:
        stored = np.asarray(zarr.open_array(os.path.join(store_path, "spatials"), mode="r")[start : start + len(block)])
    except Exception:
        return False
    return [str(x) for x in stored] == [json.dumps(jsonable(sp)) for sp in block]


def _lazy_status(store_path: str, group: str) -> Any:
    path = os.path.join(store_path, *group.split("/"), "status")
    if not os.path.exists(os.path.join(path, "zarr.json")):
        return None
    import zarr

    return zarr.open_array(path, mode="r")


def _prepare_store(plan: ExportPlan, store_path: str) -> tuple[list[Any], bool]:
    """Create (or, on resume, reuse) the working store.

    Returns the status columns to skip by, and whether finished chunks must
    be checked ROI by ROI (the store was written by a streamed request).
    """
    import zarr

    from rs_embed_dask.export.store import read_status

    check_rois = False
    if os.path.exists(store_path):
        reuse = False
        if plan.config.resume:
            try:
                attrs = dict(open_root(store_path).attrs).get("rs_embed_dask", {})
            except Exception:
                attrs = None
            if isinstance(attrs, dict) and attrs:
                what = "the zarr export" if plan.fmt == "zarr" else "the working store"
                stored, current = attrs.get("resume_identity"), plan.identity
                if isinstance(stored, dict) and ("spatials" in stored) != ("spatials" in current):
                    # a listed request and a streamed one: the ROIs are compared chunk by chunk
                    stored = {k: v for k, v in stored.items() if k != "spatials"}
                    current = {k: v for k, v in current.items() if k != "spatials"}
                    check_rois = True
                check_resume_identity(
                    stored, current, where=f"{what} {store_path!r}",
                    stored_fingerprint=attrs.get("request_fingerprint"), fingerprint=plan.fingerprint,
                )  # fmt: skip
                reuse = True
                stored_chunk = attrs.get("chunk_size")
                if isinstance(stored_chunk, int) and stored_chunk >= 1:
                    plan.chunk_items = stored_chunk  # the store's chunks are the write tasks' units
            else:
                warnings.warn(
                    f"The working store {store_path} cannot be read (damaged or not an export); starting fresh.",
                    UserWarning,
                    stacklevel=4,
                )
        if reuse:
            # only once the request matched: a refused resume leaves a finished zarr export as it was
            drop_consolidated(store_path)  # a finished zarr export changes again: listings from the files
            with contextlib.suppress(Exception):
                drop_views(store_path, dict(open_root(store_path).attrs).get("rs_embed_dask", {}).get("views"))
        else:
            shutil.rmtree(store_path)
    if not os.path.exists(store_path):  # parts belong to the store they were written with
        shutil.rmtree(parts_dir(store_path), ignore_errors=True)
    statuses: list[Any] = []
    if os.path.exists(store_path):
        groups = [f"models/{sanitize_key(m.name)}" for m in plan.models] if plan.config.save_embeddings else [f"inputs/{k}" for k in plan.inputs]
        if plan.n_items is None:
            # streamed: the arrays may hold 10**12 items (or were shrunk when a zarr export was
            # finalised): give them their unbounded capacity back and read statuses chunk by chunk
            resize_items(store_path, UNBOUNDED)
            statuses = [_lazy_status(store_path, g) for g in groups]
        else:
            statuses = [read_status(store_path, g) for g in groups]
        root = open_root(store_path, mode="r+")  # a finished zarr export with failures is running again
        root.attrs["rs_embed_dask"] = {**dict(root.attrs).get("rs_embed_dask", {}), "complete": False}
    else:
        root = zarr.open_group(store_path, mode="w")
        root.attrs["rs_embed_dask"] = _store_attrs(plan, complete=False, n_items=plan.n_items, manifest={})
    return statuses, check_rois


def _store_attrs(plan: ExportPlan, *, complete: bool, n_items: int | None, manifest: dict[str, Any]) -> dict[str, Any]:
    statics = _static_models(plan)
    return jsonable(
        {
            "format_version": 1,
            "layout": "combined",
            "n_items": n_items,
            "chunk_size": plan.items_per_chunk,
            "complete": complete,
            "request_fingerprint": plan.fingerprint,
            "resume_identity": plan.identity,
            "models": [{**s, "key": sanitize_key(s["name"])} for s in statics],
            "inputs": {k: {"owner": v.owner, "sensor": v.model.sensor, "users": list(v.users)} for k, v in plan.inputs.items()},
            "temporal": plan.temporal,
            "output": plan.output,
            "backend": plan.backend,
            "device": plan.device,
            "save_inputs": plan.config.save_inputs,
            "created_at": utc_timestamp(),
            "manifest": manifest,
        }
    )


def _run_combined(client: Any, plan: ExportPlan) -> dict[str, Any]:
    from rs_embed_dask.export.materialize import finalize_combined

    cfg = plan.config
    assert plan.out_file is not None
    os.makedirs(os.path.dirname(os.path.abspath(plan.out_file)), exist_ok=True)
    store_path = _work_store_path(plan)
    statuses, check_rois = _prepare_store(plan, store_path)
    capacity = plan.n_items if plan.n_items is not None else UNBOUNDED
    model_keys = {m.name: sanitize_key(m.name) for m in plan.models}
    progress = Progress(plan.n_items, enabled=cfg.show_progress, client=client, desc="export_batch[combined]")
    counter = {"n": 0}

    def chunk_iter() -> Iterator[Any]:
        for start, block in _chunks(plan):
            counter["n"] = start + len(block)
            if (
                statuses
                and _chunk_done(statuses, start, len(block))
                and _same_spatials(plan, store_path, start, block, check=check_rois)
                and _input_parts_intact(plan, store_path, start, len(block))
            ):
                progress.skip(len(block))
                continue
            yield start, block, None

    def submit_write(client: Any, start: int, block: list[Any], fetched: Any, inferred: Any, extra: Any, sub: _Submitter) -> Any:
        return client.submit(
            tasks.write_chunk_combined,
            store_path,
            start,
            block,
            fetched,
            inferred,
            model_keys=model_keys,
            capacity=capacity,
            chunk_size=plan.items_per_chunk,
            save_inputs=cfg.save_inputs,
            max_retries=cfg.max_retries,
            backoff_s=cfg.retry_backoff_s,
            npz_parts=plan.fmt == "npz",
            key=sub._key("write", start),
            resources=sub.io,  # IO work: never on the inference workers, which hold the model's cores
            pure=False,
        )

    _run_chunks(client, plan, submit_write, chunk_iter(), progress)
    progress.close()
    n_items = counter["n"]
    return finalize_combined(plan, store_path, n_items)

"""Shard runs: split work deterministically into shards, build them in a process pool, write
each atomically with its stats, skip finished ones on rerun, and summarise in a manifest.

A shard is finished when its `.stats.json` exists: it is written (atomically) only after the
tar has been renamed into place, so a killed run never leaves a shard that looks done.

The settings of a build are recorded in `settings.json` before its first shard is started: a
rerun with other settings (which would plan other shards and skip or repeat samples) is refused
however the previous run ended, also when it was killed long before writing manifest.json.
"""

import dataclasses
import json
import multiprocessing
import os
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..atomic import atomic_path, fsync_file, temp_beside, temps_of, write_json
from .tar_io import add_member


class SampleError(ValueError):
    """Bad input for one sample: the sample is skipped and recorded, the run goes on."""


@dataclass(frozen=True)
class ShardPlan:
    index: int
    items: tuple  # picklable work items, e.g. paths

    @property
    def name(self):
        return f"shard-{self.index:06d}"


def plan_shards(items, items_per_shard):
    """Split the (sorted) items into consecutive shards: the same plan on every machine."""
    if items_per_shard < 1:
        raise ValueError("items per shard must be >= 1")
    return [ShardPlan(i, tuple(items[s : s + items_per_shard])) for i, s in enumerate(range(0, len(items), items_per_shard))]


def plan_shards_by_group(groups, items_per_shard):
    """Shards of consecutive items that never span two groups (e.g. the videos of one input
    tar), numbered across groups in order."""
    plans = []
    for items in groups:
        plans += [ShardPlan(len(plans) + p.index, p.items) for p in plan_shards(items, items_per_shard)]
    return plans


def task_shards(plans, num_tasks, task_id):
    """The shards of one task of `num_tasks` (disjoint, round-robin so sizes balance)."""
    if not 0 <= task_id < num_tasks:
        raise ValueError(f"task id {task_id} outside 0..{num_tasks - 1}")
    return [p for p in plans if p.index % num_tasks == task_id]


SETTINGS_FILE = "settings.json"


class SettingsMismatch(Exception):
    """The output folder holds (part of) a shard build made with other settings or inputs."""


def _create_json_once(path, obj):
    """Write `obj` to `path` atomically unless `path` exists; False when it did (e.g. another
    task of the job array recorded its settings first)."""
    tmp = temp_beside(path)
    try:
        tmp.write_text(json.dumps(obj, indent=1))
        fsync_file(tmp)
        os.link(tmp, path)  # atomic and exclusive: exactly one task creates the record
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: atomic, but the last writer wins
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _recorded_settings(out_dir):
    """The settings recorded in `out_dir`: settings.json, or for a folder built before that
    file existed, the settings in manifest.json; None when neither exists."""
    for name, field in ((SETTINGS_FILE, None), ("manifest.json", "settings")):
        path = out_dir / name
        if not path.exists():
            continue
        try:
            record = json.loads(path.read_text())
            return record if field is None else record[field]
        except (ValueError, KeyError, TypeError) as exc:
            raise SettingsMismatch(f"{path}: unreadable record of the build settings ({exc}); use a new --out") from exc
    return None


def _differences(before, now):
    keys = sorted(set(before) | set(now)) if isinstance(before, dict) else []
    return ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in keys if before.get(k) != now.get(k))


def _check_same(out_dir, recorded, settings):
    if recorded != settings:
        raise SettingsMismatch(
            f"{out_dir} holds shards built with other settings or inputs ({_differences(recorded, settings)}):\n"
            f"  before: {recorded}\n  now:    {settings}\n"
            "use a new --out, or the settings from before to finish that build"
        )


def record_settings(out_dir, settings):
    """Record `settings` as those of the shard build in `out_dir` before any shard is written,
    or check them against the record of an earlier (possibly killed) run or of another task.
    Raises SettingsMismatch when they differ, or when shards exist without any record."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps(settings))  # as they read back: tuples become lists
    recorded = _recorded_settings(out_dir)
    if recorded is None and (any(out_dir.glob("shard-*.tar")) or any(out_dir.glob("shard-*.stats.json"))):
        raise SettingsMismatch(
            f"{out_dir} holds shards but no record of the settings they were built with "
            f"({SETTINGS_FILE} or manifest.json): use a new --out"
        )
    if recorded is not None:
        _check_same(out_dir, recorded, settings)
    if not (out_dir / SETTINGS_FILE).exists() and not _create_json_once(out_dir / SETTINGS_FILE, settings):
        _check_same(out_dir, _recorded_settings(out_dir), settings)  # another task recorded first
    return settings


class _Staging:
    """One sample's members, written to a temp tar as they are produced (memory stays flat),
    then copied into the shard only if the whole sample succeeded."""

    def __init__(self, folder, key):
        self.key = key
        self.file = tempfile.TemporaryFile(dir=folder)
        self.tar = tarfile.open(fileobj=self.file, mode="w")
        self.bytes = 0

    def add(self, ext, data):
        add_member(self.tar, f"{self.key}.{ext}", data)
        self.bytes += len(data)

    def copy_into(self, sink, key):
        """Append the sample to `sink` under its final `key` (members were staged under the
        hint, before the producer knew the key)."""
        self.tar.close()  # finish the archive; the file stays open
        self.file.seek(0)
        with tarfile.open(fileobj=self.file, mode="r") as staged:
            for member in staged:
                data = staged.extractfile(member)
                member.name = key + member.name[len(self.key) :]
                sink.addfile(member, data)

    def close(self):
        self.tar.close()
        self.file.close()


def build_shard(plan, out_dir, source):
    """Build one shard from `source` (see `Source`); returns the shard's stats."""
    out_dir = Path(out_dir)
    start = time.time()
    stats = {"shard": plan.name, "items": len(plan.items), "samples": 0, "frames": 0, "bytes": 0, "failures": [], "keys": []}
    keys = set()
    with (
        atomic_path(out_dir / f"{plan.name}.tar") as tmp_tar,
        tarfile.open(tmp_tar, mode="w") as sink,
    ):
        for item in plan.items:
            try:
                for key_hint, produce in source.producers(item):
                    staging = _Staging(out_dir, key_hint)
                    try:
                        key, num_frames = produce(staging.add)
                        if key in keys:
                            # WebDataset groups members by key: a second sample with one key
                            # would merge with (or break the reading of) the first.
                            raise SampleError(f"sample key {key} is already in {plan.name} (two inputs with one name?)")
                        staging.copy_into(sink, key)
                    except SampleError as exc:
                        stats["failures"].append({"source": key_hint, "reason": str(exc)})
                        continue
                    finally:
                        staging.close()
                    stats["samples"] += 1
                    stats["frames"] += num_frames
                    stats["bytes"] += staging.bytes
                    stats["keys"].append(key)
                    keys.add(key)
            except SampleError as exc:  # the item itself is unreadable (e.g. a corrupt tar)
                stats["failures"].append({"source": str(item), "reason": str(exc)})
    stats["seconds"] = round(time.time() - start, 3)
    write_json(out_dir / f"{plan.name}.stats.json", stats)
    return stats


class Source:
    """What a dataset reader provides (a picklable dataclass: it travels to worker processes).

    producers(item) yields (key_hint, produce) pairs; produce(add) calls add(ext, bytes) for
    each member of one sample and returns (key, num_frames), or raises SampleError.
    """

    unit = "items"

    def producers(self, item):
        raise NotImplementedError

    def settings(self):
        """The fields that decide what the shards hold (fields marked `setting: False` only
        decide how the work is done, and may differ between runs of one build)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("setting", True)}


def _build_shard_entry(args):
    return build_shard(*args)


def _remove_stale_temp_files(out_dir, plans):
    for plan in plans:
        for stale in temps_of(out_dir / f"{plan.name}.tar"):
            stale.unlink(missing_ok=True)


def run_shards(plans, out_dir, source, workers=1, progress=True):
    """Build every unfinished shard of `plans`; returns the stats of the shards built now."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [p for p in plans if not (out_dir / f"{p.name}.stats.json").exists()]
    _remove_stale_temp_files(out_dir, todo)  # left by a killed run of this task
    bar = tqdm(total=sum(len(p.items) for p in todo), unit=source.unit, disable=not progress, desc=f"shards -> {out_dir}")
    built = []
    if workers <= 1 or len(todo) <= 1:
        for plan in todo:
            built.append(build_shard(plan, out_dir, source))
            bar.update(len(plan.items))
    else:
        # Spawned workers import only what building a shard needs, not their parent's modules,
        # and inherit none of its threads (the progress bar's).
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_build_shard_entry, (plan, out_dir, source)): plan for plan in todo}
            for future in as_completed(futures):
                built.append(future.result())
                bar.update(len(futures[future].items))
    bar.close()
    return built


def write_manifest(out_dir, plans, kind, settings):
    """Summarise every shard finished so far (by any task) into manifest.json."""
    out_dir = Path(out_dir)
    shards, failures = [], []
    totals = {"samples": 0, "frames": 0, "bytes": 0, "failed": 0}
    for plan in plans:
        stats_path = out_dir / f"{plan.name}.stats.json"
        if not stats_path.exists():
            continue
        stats = json.loads(stats_path.read_text())
        tar_path = out_dir / f"{plan.name}.tar"
        shards.append(
            {
                "name": f"{plan.name}.tar",
                "samples": stats["samples"],
                "frames": stats["frames"],
                "size": tar_path.stat().st_size,
                "keys": stats["keys"],
            }
        )
        for key in ("samples", "frames", "bytes"):
            totals[key] += stats[key]
        totals["failed"] += len(stats["failures"])
        failures += [dict(f, shard=plan.name) for f in stats["failures"]]
    manifest = {
        "kind": kind,
        "complete": len(shards) == len(plans),
        "num_shards_planned": len(plans),
        "num_shards": len(shards),
        **totals,
        "shards": shards,
        "failures": failures,
        "settings": settings,
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest

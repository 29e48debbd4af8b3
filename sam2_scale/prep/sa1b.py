"""SA-1B images (sa_<id>.jpg + sa_<id>.json, loose or inside the original tars) -> image samples.

The JPEG is stored as it is unless `max_side` asks for a smaller long side (then it is resized
and its RLE masks with it). `max_masks` keeps the first N annotations of an image.
"""

import json
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path

from sam2_scale.data import rle as rle_utils
from sam2_scale.data import schema

from .resize import fitted_size, resize_jpeg, resize_rle
from .shards import SampleError, Source
from .validate import as_int, describe, is_number, jpeg_size, require_dict, require_list, require_optional_number


def find_sa1b_items(src):
    """Sorted work items: ("pair", jpg, json) for loose files, ("tar", path) per tar file.

    Sample keys are file names, so two loose images with one name in different folders would
    give two samples with one key: the first in path order is kept, each later one becomes a
    ("duplicate", jpg, first jpg) item that is skipped and recorded."""
    src = Path(src)
    items = [("tar", str(p)) for p in sorted(src.rglob("*.tar"))]
    first_of_name = {}
    for jpg in sorted(src.rglob("*.jpg")):
        first = first_of_name.setdefault(jpg.stem, jpg)
        if first != jpg:
            items.append(("duplicate", str(jpg), str(first)))
            continue
        json_path = jpg.with_suffix(".json")
        items.append(("pair", str(jpg), str(json_path) if json_path.exists() else None))
    return items


def _duplicate_name(where, stem, first):
    raise SampleError(f"{where}: another image named {stem} ({first}) comes first; sample keys are file names and must be unique")


@dataclass(frozen=True)
class Sa1bSource(Source):
    max_side: int = 0  # 0 = keep the original size
    max_masks: int = 0  # 0 = keep all
    quality: int = 90  # when re-encoding a resized image
    unit: str = "files"

    def producers(self, item):
        if item[0] == "pair":
            _, jpg, json_path = item
            yield Path(jpg).stem, lambda add: self._build_from_files(jpg, json_path, add)
        elif item[0] == "duplicate":
            _, jpg, first = item
            yield Path(jpg).stem, lambda add: _duplicate_name(jpg, Path(jpg).stem, first)
        else:
            yield from self._producers_from_tar(item[1])

    def _build_from_files(self, jpg, json_path, add):
        if json_path is None:
            raise SampleError(f"{jpg}: no annotation file {Path(jpg).with_suffix('.json').name}")
        try:
            image_bytes = Path(jpg).read_bytes()
            annotation = Path(json_path).read_bytes()
        except OSError as exc:
            raise SampleError(f"{jpg}: unreadable: {exc}") from exc
        return self._build(Path(jpg).stem, image_bytes, annotation, jpg, add)

    def _producers_from_tar(self, tar_path):
        """Stream the tar once; pair each image with the JSON of the same member path (without
        suffix) as they come. Same-named members in different folders are different samples, but
        would share a sample key: the first complete pair keeps it, later ones are skipped."""
        pending, first_of_name = {}, {}
        try:
            with tarfile.open(tar_path, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    base, suffix = posixpath.splitext(posixpath.normpath(member.name))
                    if suffix not in (".jpg", ".json"):
                        continue
                    data = tar.extractfile(member).read()
                    parts = pending.setdefault(base, {})
                    parts[suffix] = data
                    if len(parts) < 2:
                        continue
                    del pending[base]
                    stem, where = posixpath.basename(base), f"{tar_path}:{base}.jpg"
                    first = first_of_name.setdefault(stem, base)
                    if first != base:
                        yield stem, (lambda add, w=where, s=stem, f=f"{tar_path}:{first}.jpg": _duplicate_name(w, s, f))
                        continue
                    yield stem, (lambda add, s=stem, p=parts, w=where: self._build(s, p[".jpg"], p[".json"], w, add))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise SampleError(
                f"{tar_path}: unreadable tar ({type(exc).__name__}: {exc}); samples before this point were kept"
            ) from exc
        for base, parts in pending.items():
            missing = ".json" if ".jpg" in parts else ".jpg"

            def fail(add, base=base, missing=missing):
                raise SampleError(f"{tar_path}: {base} has no {missing} file")

            yield posixpath.basename(base), fail

    def _build(self, stem, image_bytes, annotation_bytes, where, add):
        height, width = jpeg_size(image_bytes, where)
        meta, annotations = _parse_annotations(annotation_bytes, where)
        if self.max_masks:
            annotations = annotations[: self.max_masks]
        for i, ann in enumerate(annotations):
            _check_annotation(ann, height, width, f"{where}: annotation {i}")
        new_h, new_w = fitted_size(height, width, self.max_side)
        if (new_h, new_w) != (height, width):
            image_bytes = resize_jpeg(image_bytes, new_h, new_w, self.quality, where)
            scale = self.max_side / max(height, width)
            annotations = [
                _resized_annotation(a, scale, new_h, new_w, f"{where}: annotation {i}") for i, a in enumerate(annotations)
            ]
        meta = dict(meta, annotations=annotations, schema=schema.IMAGE_SCHEMA)
        meta["image"] = dict(meta.get("image", {}), height=new_h, width=new_w, original_height=height, original_width=width)
        add(schema.IMAGE_EXT, image_bytes)
        add(schema.META_EXT, schema.encode_meta(meta))
        return schema.sample_key(stem), 1


def _resized_annotation(ann, scale, height, width, where):
    rle = resize_rle(ann["segmentation"], height, width, where)
    x, y, w, h = ann.get("bbox") or [0, 0, 0, 0]
    return dict(ann, segmentation=rle, area=rle_utils.area(rle), bbox=[x * scale, y * scale, w * scale, h * scale])


def _parse_annotations(annotation_bytes, where):
    """(meta, annotations) of an SA-1B JSON, with the types the writer and the reader rely on."""
    try:
        meta = json.loads(annotation_bytes)
    except ValueError as exc:
        raise SampleError(f"{where}: malformed annotation JSON: {exc}") from exc
    require_dict(meta, where, "annotation JSON")
    if "annotations" not in meta:
        raise SampleError(f"{where}: malformed annotation JSON: no 'annotations' list")
    annotations = require_list(meta["annotations"], where, "annotations")
    require_dict(meta.get("image", {}), where, "image")
    return meta, annotations


def _check_annotation(ann, height, width, where):
    """One annotation: an object whose RLE decodes to the image size; bbox, area and id, when
    present, of the types that resizing and training read them as."""
    require_dict(ann, where, "annotation")
    try:
        rle_utils.check(ann.get("segmentation"), height, width, f"{where} segmentation")
    except rle_utils.RLEError as exc:
        raise SampleError(str(exc)) from exc
    bbox = ann.get("bbox")
    if bbox is not None and not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        raise SampleError(f"{where}: 'bbox' must be 4 numbers, got {describe(bbox)}")
    require_optional_number(ann, "area", where)
    if ann.get("id") is not None and as_int(ann["id"]) is None:
        raise SampleError(f"{where}: 'id' must be an integer, got {describe(ann['id'])}")

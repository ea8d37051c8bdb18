"""MoviePosters (sigmoidF1 paper, Table 1): IMDb posters, genres split on ``|``."""

from __future__ import annotations

import csv
from pathlib import Path

from .base import (DatasetError, DatasetLoader, DatasetOption, Example, LoadedDataset, apply_split, file_list,
                   handle_bad_row, parse_labels, register)

ORIGINAL_CSV = Path("original_genres") / "MovieGenreDownload.csv"


def _find_csv(data_dir: Path) -> Path:
    for name in ("MovieGenre.csv", "MovieGenre_sample1000.csv"):
        if (data_dir / name).is_file():
            return data_dir / name
    found = sorted(data_dir.glob("MovieGenre*.csv"))
    if not found:
        raise DatasetError(f"movieposters: no MovieGenre*.csv in {data_dir} (expected layout: see `mlhead datasets`)")
    return found[0]


def _image_dirs(data_dir: Path) -> list[Path]:
    dirs = [data_dir / d for d in ("MoviePosters", "SampleMoviePosters", "posters")]
    return [d for d in dirs if d.is_dir()] + [data_dir]


def _read_original(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["imdbId"]: row["Genre"] for row in csv.DictReader(fh)}


@register("movieposters")
class MoviePosters(DatasetLoader):
    modality = "image"
    default_backbone = "mobilenetv2_100"
    layout = ("<data-dir>/MovieGenre.csv (imdbId,Genre,Poster,...; Poster = file name) + MoviePosters/<Poster>; "
              "or the Kaggle layout: MovieGenre*.csv (Poster = URL) + SampleMoviePosters/<imdbId>.jpg. "
              "Optional original_genres/MovieGenreDownload.csv (imdbId,Title,Genre) for --labels original. "
              "Rows whose image file is absent or whose Genre is empty are skipped (counted in the notes).")
    OPTIONS = {"labels": DatasetOption("altered", "altered: the CSV's Genre column; original: full original genres "
                                                  "from original_genres/MovieGenreDownload.csv (posters without a row "
                                                  "are skipped)", choices=("altered", "original"))}

    def load(self, data_dir, split_seed=44, split_mode="random", on_error="raise", labels="altered", **_):
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DatasetError(f"movieposters: data directory not found: {data_dir}")
        table = _find_csv(data_dir)
        original = _original_genres(data_dir, labels)
        img_dirs = _image_dirs(data_dir)
        examples, skipped, files = [], [], [table]
        counts = {"image file absent": 0, "empty Genre": 0, "no row in original-genres CSV": 0}
        with open(table, newline="", encoding="utf-8") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                where = f"{table}:{line}"
                try:
                    example = _poster_example(row, where, img_dirs, original, counts)
                except DatasetError as e:
                    handle_bad_row(on_error, skipped, _poster_name(row), where, e)
                    continue
                if example is not None:
                    examples.append(example)
                    files.append(Path(example.input))
        if not examples:
            raise DatasetError(f"movieposters: no usable rows in {table} (images looked up in "
                               f"{', '.join(map(str, img_dirs))})")
        ids = [e.id for e in examples]
        if len(set(ids)) != len(ids):
            raise DatasetError(f"movieposters: duplicate poster file names in {table}")
        notes = [f"{len(examples)} posters from {table}"]
        notes += [f"{n} rows skipped: {why}" for why, n in counts.items() if n]
        classes = sorted({c for e in examples for c in e.labels})
        return LoadedDataset(
            name=self.name, modality=self.modality, classes=classes,
            splits=apply_split(examples, split_seed, split_mode),
            files=file_list(files + ([data_dir / ORIGINAL_CSV] if original is not None else [])),
            split_mode=split_mode, split_seed=split_seed, options={"labels": labels},
            notes=notes, skipped=skipped)


def _original_genres(data_dir: Path, labels: str) -> dict[str, str] | None:
    """``--labels``: None for ``altered``; imdbId -> Genre of the original-genres CSV for ``original``."""
    if labels not in ("altered", "original"):
        raise DatasetError(f"movieposters: --labels {labels!r} invalid; valid: altered, original")
    if labels == "altered":
        return None
    orig_path = data_dir / ORIGINAL_CSV
    if not orig_path.is_file():
        raise DatasetError(f"movieposters: --labels original needs {orig_path}")
    return _read_original(orig_path)


def _poster_name(row: dict) -> str:
    """The poster's file name: the ``Poster`` column when it names an image file, else ``<imdbId>.jpg``."""
    poster = (row.get("Poster") or "").strip()
    imdb = (row.get("imdbId") or "").strip()
    return poster if poster.lower().endswith((".jpg", ".jpeg", ".png")) and "://" not in poster else f"{imdb}.jpg"


def _poster_example(row: dict, where: str, img_dirs: list[Path], original: dict | None,
                    counts: dict) -> Example | None:
    """The Example of one CSV row, or None (counted in ``counts``) when its image or genre is absent.

    Raises DatasetError for a malformed Genre (a bad row under ``--on-error``)."""
    name = _poster_name(row)
    image = next((d / name for d in img_dirs if (d / name).is_file()), None)
    if image is None:
        counts["image file absent"] += 1
        return None
    imdb = (row.get("imdbId") or "").strip()
    genre = row.get("Genre", "") if original is None else original.get(imdb)
    if genre is None:
        counts["no row in original-genres CSV"] += 1
        return None
    if not genre.strip():
        counts["empty Genre"] += 1
        return None
    return Example(id=name, input=str(image), labels=parse_labels(genre, "|", where), where=where)

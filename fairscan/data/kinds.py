"""Dataset kinds, one registry: each kind's settings (what a preset's ``datasets:`` entry holds and what
``fairscan prepare KIND`` takes as options), how it is prepared, and the command that prepares it.

A kind is a :class:`DatasetKind` with ``kind: Literal[name]``; :data:`KINDS` lists them and :data:`DatasetSpec` is
their discriminated union. ``prepare(out, data)`` returns the adapter's :class:`~fairscan.data.manifest.Prepared`
(written by the caller); ``command(out, data)`` is the equivalent ``fairscan prepare`` command line; ``needs()``
names the other datasets it is made from. In a preset, a pool's sources and a balanced set's source are dataset
names under ``${data}``; on the command line they are folders.
"""

from __future__ import annotations

import shlex
from abc import abstractmethod
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, field_validator

from fairscan.settings import Cli, Settings, cli_of

LabelPolicy = Literal["u-zeros", "u-ones", "ignore", "mixed"]
Blank = Literal["zero", "mask"]
Fractions = tuple[float, float, float]
PAPER_FRACTIONS = (0.6, 0.1, 0.3)
SPLIT_HELP = "random (the paper's cohort, seeded 60/10/30), published, official, or a split file."


class DatasetKind(Settings):
    """The base of every dataset kind."""

    examples: ClassVar[tuple[str, ...]] = ()
    kind: str
    seed: int = Field(0, description="Seed of every random choice (splits, fractions, sampling).")

    def needs(self) -> list[str]:
        """The datasets this one is made from (their names in a preset)."""
        return []

    @classmethod
    def options(cls) -> dict[str, Any]:
        """The kind's settings as its command takes them: its own first, then those it shares with others."""
        own = [k for k in cls.__annotations__ if k in cls.model_fields]
        names = [*own, *(k for k in cls.model_fields if k not in own)]
        return {k: cls.model_fields[k] for k in names if k != "kind"}

    @abstractmethod
    def prepare(self, out: Path, data: Path | None = None):
        """The adapter's :class:`~fairscan.data.manifest.Prepared` for ``out`` (from the raw folder ``data``
        where the kind reads one); every kind defines it."""

    def command(self, out: Path, data: Path | None = None) -> str:
        """The ``fairscan prepare`` command that makes this dataset in ``out``: positional arguments, then every
        option whose value differs from its default."""
        words = ["fairscan", "prepare", self.kind]
        options: list[str] = []
        for name, field in self.options().items():
            value = getattr(self, name)
            marker = cli_of(field)
            if name == "kind" or (
                not marker.argument and value == field.get_default(call_default_factory=True)
            ):
                continue
            if name in self.dataset_fields and data is not None:
                value = [str(data / v) for v in value] if isinstance(value, list) else str(data / value)
            flag = marker.flags[0] if marker.flags else "--" + name.replace("_", "-")
            values = value if isinstance(value, list) else [value]
            if marker.argument:
                words += [str(v) for v in values]
            elif isinstance(value, bool):
                options.append(flag if value else "--no-" + flag[2:])
            elif marker.repeat:
                options += [w for v in values for w in (flag, str(v))]
            else:
                text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
                options += [flag, text]
        return shlex.join([*words, *options, "--out", str(out)])

    dataset_fields: ClassVar[
        tuple[str, ...]
    ] = ()  # fields naming other datasets (folders on the command line)

    def _dataset(self, name: str, data: Path | None) -> Path:
        return data / name if data is not None else Path(name)


class _Cohort(DatasetKind):
    """A real dataset's adapter: its split's shares when the split is drawn at random."""

    fractions: Fractions = Field(
        PAPER_FRACTIONS, description="train,validate,test shares of patients for --split random."
    )


class _Labelled(_Cohort):
    """A dataset with CheXpert-style labels (uncertain, blank) and race from its demographics."""

    label_policy: Annotated[LabelPolicy, Cli(("--labels",))] = Field(
        "u-zeros", description="Label policy for uncertain (-1) labels: u-zeros, u-ones, ignore, mixed."
    )
    blank: Blank = Field("zero", description="Blank (unmentioned) labels: zero or mask.")
    all_races: bool = Field(
        False,
        description="Keep images whose race does not map (race left missing), e.g. for pre-training pools.",
    )


class ChexpertData(_Labelled):
    """CheXpert: train.csv (+ valid.csv) and the demographics file."""

    examples: ClassVar[tuple[str, ...]] = (
        'fairscan prepare chexpert CheXpert-v1.0-small -d "CHEXPERT DEMO.xlsx" --out data/chexpert',
        "fairscan prepare chexpert CheXpert-v1.0-small -d demo.xlsx --split published --out data/chexpert-paper",
    )
    kind: Literal["chexpert"] = "chexpert"
    root: Annotated[str, Cli(argument=True, metavar="ROOT")] = Field(
        description="The folder holding train.csv (e.g. CheXpert-v1.0-small), or the CSV."
    )
    demographics: Annotated[str, Cli(("--demographics", "-d"))] = Field(
        description="CHEXPERT DEMO.xlsx (or a CSV with its columns)."
    )
    split: str = Field("random", description=SPLIT_HELP)
    validate_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train.csv patients that validate (official)."
    )

    def prepare(self, out: Path, data: Path | None = None):
        from fairscan.data.chexpert import prepare_chexpert

        return prepare_chexpert(
            self.root, demographics=self.demographics, split=self.split, seed=self.seed, fractions=self.fractions,
            validate_fraction=self.validate_fraction, label_policy=self.label_policy, blank=self.blank,
            all_races=self.all_races,
        )  # fmt: skip


class NihData(_Cohort):
    """NIH ChestX-ray14: Data_Entry_2017.csv with the official lists (sex and age; no race)."""

    examples: ClassVar[tuple[str, ...]] = ("fairscan prepare nih ChestX-ray14 --out data/nih",)
    kind: Literal["nih"] = "nih"
    root: Annotated[str, Cli(argument=True, metavar="ROOT")] = Field(
        description="The folder holding Data_Entry_2017.csv (and images/), or the CSV."
    )
    split: str = Field("official", description="official (the two lists) or random.")
    lists: str | None = Field(
        None, description="Folder of train_val_list.txt and test_list.txt (default: ROOT)."
    )
    validate_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train_val patients that validate."
    )

    def prepare(self, out: Path, data: Path | None = None):
        from fairscan.data.nih import prepare_nih

        return prepare_nih(
            self.root, split=self.split, lists=self.lists, seed=self.seed, fractions=self.fractions,
            validate_fraction=self.validate_fraction,
        )  # fmt: skip


class MimicData(_Labelled):
    """MIMIC-CXR-JPG with race from MIMIC-IV admissions and sex/age from patients."""

    examples: ClassVar[tuple[str, ...]] = (
        "fairscan prepare mimic physionet.org/files/mimic-cxr-jpg/2.0.0 --mimic-iv physionet.org/files/mimiciv/2.2 "
        "--out data/mimic",
    )
    kind: Literal["mimic"] = "mimic"
    root: Annotated[str, Cli(argument=True, metavar="ROOT")] = Field(
        description="The MIMIC-CXR-JPG 2.0.0 folder (metadata, chexpert, split CSVs)."
    )
    mimic_iv: str | None = Field(
        None, description="MIMIC-IV folder with admissions.csv and patients.csv (or hosp/, core/)."
    )
    split: str = Field("official", description="official (the split file) or random.")

    def prepare(self, out: Path, data: Path | None = None):
        from fairscan.data.mimic import prepare_mimic

        return prepare_mimic(
            self.root, mimic_iv=self.mimic_iv, split=self.split, seed=self.seed, fractions=self.fractions,
            label_policy=self.label_policy, blank=self.blank, all_races=self.all_races,
        )  # fmt: skip


class SyntheticData(DatasetKind):
    """A synthetic dataset in a real layout (under OUT/raw), prepared into OUT/manifest.parquet."""

    examples: ClassVar[tuple[str, ...]] = (
        "fairscan prepare synthetic --out data/synthetic",
        "fairscan prepare synthetic --layout mimic --patients 1000 --effect 1 --out data/synthetic-mimic",
    )
    kind: Literal["synthetic"] = "synthetic"
    layout: Literal["chexpert", "nih", "mimic"] = Field("chexpert", description="Whose real layout to write.")
    patients: int | None = Field(None, ge=10, description="Number of patients (default: the profile's).")
    image_size: int = Field(64, ge=16, description="Image width in pixels (height is 1.2x).")
    profile: Literal["default", "test"] = Field(
        "default", description="default (small, quick) or test (large groups, strong effect)."
    )
    effect: float | None = Field(
        None, ge=0, le=1, description="Planted subgroup effect strength in [0, 1] (default: the profile's)."
    )
    effect_group: str | None = Field(
        None, description="Affected group, attribute:value (default race:Black; NIH sex:Female)."
    )

    @field_validator("effect_group")
    @classmethod
    def _a_group_of_the_layout(cls, value: str | None, info) -> str | None:
        """A group no patient belongs to would plant nothing: refused before any image is drawn."""
        from fairscan.data.synthetic import Effect

        Effect.parse(value, 0.0, info.data.get("layout", "chexpert"))  # an InputError passes through as it is
        return value

    def prepare(self, out: Path, data: Path | None = None):
        from fairscan.data.synthetic import prepare_synthetic

        return prepare_synthetic(
            out, layout=self.layout, patients=self.patients, seed=self.seed, image_size=self.image_size,
            effect=self.effect, effect_group=self.effect_group, profile=self.profile,
        )  # fmt: skip


class PoolData(DatasetKind):
    """A pre-training pool of several manifests, with a leakage warning."""

    examples: ClassVar[tuple[str, ...]] = (
        "fairscan prepare pool data/nih data/chexpert-all --fraction 0.3 -e data/chexpert-paper --out data/pool",
    )
    dataset_fields: ClassVar[tuple[str, ...]] = ("sources", "evaluation")
    kind: Literal["pool"] = "pool"
    sources: Annotated[list[str], Cli(argument=True, metavar="MANIFESTS...")] = Field(
        min_length=1, description="Prepared manifest folders to combine."
    )
    splits: list[Literal["train", "validate", "test"]] | None = Field(
        None, description="Only these source splits, e.g. train,validate (default: all)."
    )
    fraction: float = Field(1.0, gt=0, le=1, description="Seeded share of each source's patients.")
    evaluation: Annotated[list[str], Cli(("--evaluation", "-e"), repeat=True)] = Field(
        default_factory=list, description="Evaluation manifest(s) to check for leakage (repeatable)."
    )

    def needs(self) -> list[str]:
        return [*self.sources, *self.evaluation]

    def prepare(self, out: Path, data: Path | None = None):
        from fairscan.data.cohorts import make_pool

        return make_pool(
            [self._dataset(s, data) for s in self.sources], fraction=self.fraction, seed=self.seed,
            splits=self.splits, evaluation=[self._dataset(e, data) for e in self.evaluation],
        )  # fmt: skip


class BalanceData(DatasetKind):
    """The balanced fine-tuning set (paper §4.3): every race undersampled to the smallest, sex evened out."""

    examples: ClassVar[tuple[str, ...]] = (
        "fairscan prepare balance data/chexpert --out data/chexpert-balanced",
    )
    dataset_fields: ClassVar[tuple[str, ...]] = ("source",)
    kind: Literal["balance"] = "balance"
    source: Annotated[str, Cli(argument=True, metavar="MANIFEST")] = Field(
        description="A prepared manifest folder (with race)."
    )

    def needs(self) -> list[str]:
        return [self.source]

    def prepare(self, out: Path, data: Path | None = None):
        from fairscan.data.cohorts import balance_training_set

        return balance_training_set(self._dataset(self.source, data), seed=self.seed)


KINDS: dict[str, type[DatasetKind]] = {
    "chexpert": ChexpertData,
    "nih": NihData,
    "mimic": MimicData,
    "synthetic": SyntheticData,
    "pool": PoolData,
    "balance": BalanceData,
}
DatasetSpec = Annotated[Union[tuple(KINDS.values())], Field(discriminator="kind")]


def inputs_of(spec: DatasetKind) -> list[Any]:
    """The folders a spec reads from (a command-line pool's or balanced set's manifests)."""
    return [getattr(spec, name) for name in spec.dataset_fields]

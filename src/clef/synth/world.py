"""The built-in world's domains: lab videos (BP4D-like, DISFA-like) and wild stills (RAF-DB-like).

Everything here is label-level: who is filmed, in which activity, which expression episode is
happening at each frame and with which AU intensities. Pixels come from :mod:`clef.synth.render`.
Each video and each wild image draws from its own random stream keyed by (seed, domain, index), so
the world is identical however the rendering is split across processes.

Properties the paper's argument needs, and where they come from:

- few subjects with strong identities (:func:`clef.synth.identity.sample_identity`), so identity is
  the loudest visual cue;
- activities elicit emotions only loosely: each activity is a *mixture* over emotions in which its
  target emotion dominates the expressive moments (``target_share``), others occur, and most frames
  are neutral or near-neutral;
- a video is a sequence of onset-apex-offset episodes, so neighbouring frames are near duplicates;
- subjects differ in expressivity and in how often they emote; talking activities add lip movement
  (AU25/26) unrelated to emotion.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from clef.errors import UserError
from clef.labels import ALL_AUS
from clef.synth.emotions import EMOTIONS, sample_expression
from clef.synth.identity import Identity, sample_identity
from clef.synth.render import Nuisance, sample_nuisance

# BP4D's subject ids, interleaving the three fold parts so that any number of subjects spreads evenly
# over the shipped 3-fold protocol.
_BP4D_PARTS = (
    "F001 F002 F008 F009 F010 F016 F018 F023 M001 M004 M007 M008 M012 M014".split(),
    "F003 F005 F011 F013 F020 F022 M002 M005 M010 M011 M013 M016 M017 M018".split(),
    "F004 F006 F007 F012 F014 F015 F017 F019 F021 M003 M006 M009 M015".split(),
)
_DISFA_PARTS = (
    "SN001 SN002 SN009 SN010 SN016 SN026 SN027 SN030 SN032".split(),
    "SN006 SN011 SN012 SN013 SN018 SN021 SN024 SN028 SN031".split(),
    "SN003 SN004 SN005 SN007 SN008 SN017 SN023 SN025 SN029".split(),
)


def _interleave(parts: tuple[list[str], ...]) -> tuple[str, ...]:
    longest = max(len(p) for p in parts)
    return tuple(p[i] for i in range(longest) for p in parts if i < len(p))


LAB_SUBJECT_IDS = _interleave(_BP4D_PARTS)
DISFA_SUBJECT_IDS = _interleave(_DISFA_PARTS)


@dataclass(frozen=True)
class Activity:
    """A lab task: its id, its target emotion, and how it elicits expressions."""

    task: str
    target: str
    related: tuple[str, ...]  # other emotions the task tends to elicit
    talking: float  # share of frames with speech (AU25/26 flicker unrelated to emotion)
    arousal: float  # multiplies how often episodes start


# The eight tasks mirror BP4D's (docs/method.md §6). Their description texts are the `synth` prompt set.
ACTIVITIES: tuple[Activity, ...] = (
    Activity("T1", "happiness", ("embarrassment", "surprise"), talking=0.5, arousal=1.0),
    Activity("T2", "sadness", ("neutral", "contempt"), talking=0.35, arousal=0.7),
    Activity("T3", "surprise", ("fear",), talking=0.05, arousal=1.1),
    Activity("T4", "embarrassment", ("happiness",), talking=0.6, arousal=1.0),
    Activity("T5", "fear", ("surprise", "anger"), talking=0.1, arousal=0.9),
    Activity("T6", "pain", ("disgust", "anger"), talking=0.1, arousal=1.0),
    Activity("T7", "anger", ("contempt", "disgust", "sadness"), talking=0.3, arousal=0.9),
    Activity("T8", "disgust", ("pain", "surprise"), talking=0.05, arousal=1.0),
)
ACTIVITY_IDS = tuple(a.task for a in ACTIVITIES)

# RAF-DB's training-set class shares (12,271 images), used for the wild domain's label prior.
WILD_CLASS_SHARES: dict[str, float] = {
    "surprise": 1290,
    "fear": 281,
    "disgust": 717,
    "happiness": 4772,
    "sadness": 1982,
    "anger": 705,
    "neutral": 2524,
}


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and rates of the built-in world. Defaults give a BP4D-shaped lab set of 41 subjects."""

    seed: int = 0
    size: int = 64
    lab_subjects: int = 41
    frames_per_video: int = 120
    disfa_subjects: int = 27
    disfa_frames: int = 400
    wild_images: int = 4000
    wild_test_fraction: float = 0.2
    label_noise: float = 0.05
    # Calibration (reports/world_calibration.md): BP4D's released frames are each task's most
    # expressive stretch, so most frames show an expression, and that of the task's target emotion.
    target_share: float = 0.7  # share of a task's expressive episodes showing its target emotion
    episode_gap: float = 10.0  # mean neutral frames between episodes (before emote rate and arousal)
    lab_strength: tuple[float, float] = (0.8, 1.4)  # episode intensity factor (x the subject's expressivity)
    wild_strength: tuple[float, float] = (1.0, 1.7)  # wild stills: RAF-DB's labels need clear expressions
    uncoded_rate: float = 0.03  # share of lab frames whose AU labels are left uncoded (9)

    def __post_init__(self) -> None:
        if not 0.0 <= self.target_share <= 1.0:
            raise UserError(f"WorldConfig.target_share must be in [0, 1], got {self.target_share}")
        if not self.episode_gap > 0:
            raise UserError(f"WorldConfig.episode_gap must be > 0 frames, got {self.episode_gap}")
        for name in ("lab_strength", "wild_strength"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise UserError(f"WorldConfig.{name} needs 0 <= low <= high, got ({low}, {high})")


@dataclass(frozen=True)
class Subject:
    """A filmed person: identity plus behavioural traits."""

    sid: str
    identity: Identity
    expressivity: float  # multiplies episode intensities
    emote_rate: float  # multiplies how often episodes start
    camera: Nuisance  # the subject's session setup: mean pose, lighting and camera placement


@dataclass(frozen=True)
class Video:
    """Frame-level truth of one video: AU intensities, expression and per-frame nuisances."""

    subject: Subject
    activity: str | None
    frames: np.ndarray  # (T,) frame numbers as written to disk
    au: np.ndarray  # (T, 17) intensities 0-5 ordered as ALL_AUS
    expression: tuple[str, ...]  # (T,) emotion shown at each frame ("neutral" between episodes)
    unilateral: tuple[str | None, ...]  # (T,) side of one-sided AUs at each frame
    nuisance: tuple[Nuisance, ...]  # (T,)
    uncoded: np.ndarray  # (T, 17) bool: label left uncoded (BP4D "9")
    seed_key: tuple[int, ...]  # random stream of the video's pixel noise


_DOMAIN_KEYS = {"lab": 1, "disfa": 2, "wild": 3}


def make_subject(config: WorldConfig, domain: str, index: int, sid: str) -> Subject:
    rng = np.random.default_rng([config.seed, _DOMAIN_KEYS[domain], index, 0])
    return Subject(
        sid=sid,
        identity=sample_identity(rng, "lab"),
        expressivity=float(rng.uniform(0.8, 1.25)),
        emote_rate=float(rng.uniform(0.6, 1.4)),
        camera=sample_nuisance(rng, "lab"),
    )


def lab_subjects(config: WorldConfig) -> list[Subject]:
    return [
        make_subject(config, "lab", i, sid) for i, sid in enumerate(LAB_SUBJECT_IDS[: config.lab_subjects])
    ]


def disfa_subjects(config: WorldConfig) -> list[Subject]:
    ids = DISFA_SUBJECT_IDS[: config.disfa_subjects]
    return [make_subject(config, "disfa", i, sid) for i, sid in enumerate(ids)]


def activity_mixture(activity: Activity, target_share: float) -> dict[str, float]:
    """Probabilities of the emotion of an expressive episode during ``activity``.

    The target gets ``target_share``; related emotions share 60 % of the rest; the remaining
    emotions (pain and embarrassment only in the tasks that elicit them) share the last 40 %.
    """
    rest = 1.0 - target_share
    others = [e for e in EMOTIONS if e not in (activity.target, "neutral", *activity.related)]
    others = [e for e in others if e not in ("pain", "embarrassment")]
    mix = {activity.target: target_share}
    for emotion in activity.related:
        mix[emotion] = mix.get(emotion, 0.0) + 0.6 * rest / len(activity.related)
    for emotion in others:
        mix[emotion] = mix.get(emotion, 0.0) + 0.4 * rest / len(others)
    return mix


def make_video(
    config: WorldConfig,
    subject: Subject,
    subject_index: int,
    activity: Activity | None,
    n_frames: int,
    domain: str = "lab",
) -> Video:
    """Simulate one video: episodes with onset-apex-offset over a neutral baseline."""
    act_index = ACTIVITY_IDS.index(activity.task) + 1 if activity else 0
    key = (config.seed, _DOMAIN_KEYS[domain], subject_index, act_index)
    rng = np.random.default_rng([*key, 1])
    if activity is None:  # DISFA-like: watching a montage of clips, no task
        mix = {e: 1.0 for e in ("happiness", "surprise", "fear", "disgust", "sadness", "anger")}
        talking, arousal = 0.0, 1.0
    else:
        mix = activity_mixture(activity, config.target_share)
        talking, arousal = activity.talking, activity.arousal
    emotions, weights = list(mix), np.array(list(mix.values()))
    weights = weights / weights.sum()

    au = np.zeros((n_frames, len(ALL_AUS)))
    expression = ["neutral"] * n_frames
    unilateral: list[str | None] = [None] * n_frames
    mean_gap = config.episode_gap / (subject.emote_rate * arousal)
    t = int(rng.integers(0, 12))
    while t < n_frames:
        emotion = emotions[int(rng.choice(len(emotions), p=weights))]
        strength = subject.expressivity * rng.uniform(*config.lab_strength)
        apex_au, side = sample_expression(emotion, rng, strength)
        onset, apex, offset = int(rng.integers(3, 9)), int(rng.integers(4, 24)), int(rng.integers(3, 11))
        envelope = np.concatenate(
            [np.linspace(0, 1, onset + 1)[1:], np.ones(apex), np.linspace(1, 0, offset + 1)[:-1]]
        )
        # A smooth ease (not a straight ramp) so onsets and offsets look like muscle movement.
        envelope = envelope * envelope * (3 - 2 * envelope)
        stop = min(n_frames, t + len(envelope))
        au[t:stop] = np.maximum(au[t:stop], envelope[: stop - t, None] * apex_au[None])
        for f in range(t, stop):
            if envelope[f - t] >= 0.5:
                expression[f] = emotion
                unilateral[f] = side
        t = stop + int(rng.exponential(mean_gap)) + 2

    if talking > 0:  # speech: lips part and the jaw moves in bursts, unrelated to emotion
        speaking = _bursts(rng, n_frames, talking, mean_length=10)
        phase = rng.uniform(0, 2 * np.pi)
        mouth = 1.2 + 1.0 * np.sin(np.arange(n_frames) * 0.5 + phase)
        au[:, ALL_AUS.index(25)] = np.maximum(au[:, ALL_AUS.index(25)], speaking * (mouth + 0.6))
        au[:, ALL_AUS.index(26)] = np.maximum(
            au[:, ALL_AUS.index(26)], speaking * np.clip(mouth - 0.8, 0, None)
        )
    # Low-level muscle noise on active AUs, smoothed over ~5 frames: faces are never perfectly still,
    # but neighbouring frames stay near duplicates.
    noise = rng.normal(0.0, 0.25, (n_frames + 4, au.shape[1]))
    noise = np.stack([noise[i : i + n_frames] for i in range(5)]).mean(axis=0)
    au = np.clip(au + noise * (au > 0), 0.0, 5.0)

    uncoded = np.zeros_like(au, dtype=bool)
    if config.uncoded_rate > 0 and rng.random() < 0.7:
        length = max(1, int(round(n_frames * config.uncoded_rate / 0.7)))
        start = int(rng.integers(0, max(1, n_frames - length)))
        uncoded[start : start + length] = True  # a stretch the coders skipped
    first_frame = int(rng.integers(1, 3000)) if domain == "lab" else 0
    return Video(
        subject=subject,
        activity=activity.task if activity else None,
        frames=np.arange(first_frame, first_frame + n_frames),
        au=au,
        expression=tuple(expression),
        unilateral=tuple(unilateral),
        nuisance=_drifting_nuisances(subject.camera, rng, n_frames),
        uncoded=uncoded,
        seed_key=key,
    )


def _bursts(rng: np.random.Generator, n: int, share: float, mean_length: float) -> np.ndarray:
    """A 0/1 array with runs of ones covering about ``share`` of ``n`` frames."""
    on = np.zeros(n)
    mean_gap = mean_length * (1 - share) / max(share, 1e-6)
    t = int(rng.exponential(mean_gap))
    while t < n:
        length = 1 + int(rng.exponential(mean_length))
        on[t : t + length] = 1.0
        t += length + 1 + int(rng.exponential(mean_gap))
    return on


def _drifting_nuisances(camera: Nuisance, rng: np.random.Generator, n: int) -> tuple[Nuisance, ...]:
    """Per-frame nuisances that drift smoothly around the subject's session setup.

    Every float field follows a slow random walk between keyframes drawn from the lab nuisance
    distribution, mixed with the session's own values, so head pose and lighting change gradually.
    """
    float_fields = [f.name for f in fields(camera) if isinstance(getattr(camera, f.name), float)]
    step = 30
    keys = [sample_nuisance(rng, "lab") for _ in range(n // step + 2)]
    out = []
    for t in range(n):
        a, b = keys[t // step], keys[t // step + 1]
        w = (t % step) / step
        w = w * w * (3 - 2 * w)
        values = {}
        for name in float_fields:
            drift = (1 - w) * getattr(a, name) + w * getattr(b, name)
            values[name] = 0.6 * getattr(camera, name) + 0.4 * drift
        out.append(replace(camera, **values))
    return tuple(out)


def wild_class_probabilities() -> tuple[tuple[str, ...], np.ndarray]:
    names = tuple(WILD_CLASS_SHARES)
    shares = np.array([WILD_CLASS_SHARES[n] for n in names], dtype=np.float64)
    return names, shares / shares.sum()


@dataclass(frozen=True)
class WildImage:
    """One in-the-wild still: a fresh identity, a posed/spontaneous expression, a (noisy) label."""

    name: str  # RAF-DB style stem, e.g. train_00001
    identity: Identity
    au: np.ndarray  # (17,)
    unilateral: str | None
    nuisance: Nuisance
    expression: str  # the expression actually shown
    label: str  # the annotated label (differs from `expression` for label noise)
    seed_key: tuple[int, ...]


def make_wild_image(config: WorldConfig, index: int) -> WildImage:
    """The ``index``-th wild image (0-based); the first (1 - test_fraction) share is the train split."""
    key = (config.seed, _DOMAIN_KEYS["wild"], index)
    rng = np.random.default_rng([*key, 1])
    names, probabilities = wild_class_probabilities()
    expression = names[int(rng.choice(len(names), p=probabilities))]
    au, side = sample_expression(expression, rng, strength=float(rng.uniform(*config.wild_strength)))
    label = expression
    if rng.random() < config.label_noise:
        label = names[int(rng.choice([i for i, n in enumerate(names) if n != expression]))]
    n_train = wild_train_count(config)
    name = f"train_{index + 1:05d}" if index < n_train else f"test_{index - n_train + 1:04d}"
    return WildImage(
        name=name,
        identity=sample_identity(rng, "wild"),
        au=au,
        unilateral=side,
        nuisance=sample_nuisance(rng, "wild"),
        expression=expression,
        label=label,
        seed_key=key,
    )


def wild_train_count(config: WorldConfig) -> int:
    return int(round(config.wild_images * (1.0 - config.wild_test_fraction)))

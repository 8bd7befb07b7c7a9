"""SF: spoken commands with slot annotations, in the Audio SNIPS layout s3prl's ``ctc`` reads.

Seven SNIPS-like intents, each a few phrasings with slots filled from small value lists
(values of one or more words). Every speaker of the corpus says ``PER_SPEAKER[size]`` commands;
training-pool speakers go to ``train/``, dev speakers to ``valid/``, test speakers to ``test/``.

Written under OUT/sf/:
- ``{train,valid,test}/<spk>-snips-<split>-<n>.wav``
- ``all.iob.snips.txt``: ``<uid> BOS W1 ... Wn EOS<TAB>O S1 ... Sn <Intent>`` (upper-case words,
  a slot name or ``O`` per word, as s3prl's SNIPS preparation writes it)
- ``all-trans.txt``: ``<uid> W1 ... Wn`` (for ``text.mode: character``)
- ``slots.txt``: ``O``, then the slot names, no final newline (s3prl skips the first line and
  would turn an empty last one into a slot)
"""

from speechft_upstream.data.plan import rng_for

PER_SPEAKER = {"default": 4, "quick": 2, "tiny": 2}
SPLIT_FOLDER = {"train": "train", "dev": "valid", "test": "test"}

_VALUES = {
    "artist": ("adele", "the beatles", "miles davis", "nina simone", "bob marley", "taylor swift"),
    "playlist": ("road trip", "morning coffee", "workout", "chill evening", "rainy day"),
    "music_item": ("song", "album", "track"),
    "city": ("london", "paris", "new york", "tokyo", "berlin", "cape town"),
    "timeRange": ("tomorrow", "tonight", "this weekend", "next monday"),
    "restaurant_type": ("pizzeria", "steakhouse", "sushi bar", "cafe"),
    "party_size_number": ("two", "four", "six", "ten"),
    "object_name": ("the hobbit", "dune", "little women", "the odyssey"),
    "rating_value": ("one", "three", "five"),
    "movie_name": ("the matrix", "jaws", "toy story", "casablanca"),
    "location_name": ("the grand cinema", "star theatre", "city plaza"),
    "object_type": ("book", "novel", "audiobook"),
}
# (intent, phrasing); {slot} is filled with a value of that slot
_COMMANDS = (
    ("AddToPlaylist", "add {artist} to my {playlist} playlist"),
    ("AddToPlaylist", "put this {music_item} on {playlist}"),
    ("PlayMusic", "play a {music_item} by {artist}"),
    ("PlayMusic", "play {artist}"),
    ("GetWeather", "what is the weather in {city} {timeRange}"),
    ("GetWeather", "will it rain {timeRange}"),
    ("BookRestaurant", "book a {restaurant_type} for {party_size_number} in {city}"),
    ("BookRestaurant", "reserve a table for {party_size_number} {timeRange}"),
    ("RateBook", "give {object_name} {rating_value} stars"),
    ("RateBook", "rate this {object_type} {rating_value} out of five"),
    ("SearchScreeningEvent", "when is {movie_name} playing at {location_name}"),
    ("SearchCreativeWork", "find the {object_type} {object_name}"),
)
SLOTS = tuple(_VALUES)


def command(rng):
    """(words, slot per word, intent) of one random command."""
    intent, phrase = _COMMANDS[int(rng.integers(len(_COMMANDS)))]
    words, slots = [], []
    for token in phrase.split():
        if token.startswith("{"):
            slot = token[1:-1]
            value = _VALUES[slot][int(rng.integers(len(_VALUES[slot])))]
            words += value.split()
            slots += [slot] * len(value.split())
        else:
            words.append(token)
            slots.append("O")
    return words, slots, intent


def add_jobs(add, seed, size, split_of):
    """Append the SF jobs (after every other task's, so theirs keep their ids and noise seeds)."""
    for s in sorted(split_of):
        rng = rng_for(seed, "sf", s)
        for _ in range(PER_SPEAKER[size]):
            words, slots, intent = command(rng)
            add("sf", s, split_of[s], " ".join(words), label=intent, slots=slots, shard_group="sf")


def paths(layout):
    counters = {}
    for job in layout["jobs"]:
        if job["task"] != "sf":
            continue
        folder = SPLIT_FOLDER[job["split"]]
        n = counters[folder] = counters.get(folder, -1) + 1
        job["uid"] = f"spk{job['speaker']:03d}-snips-{folder}-{n}"
        job["path"] = f"sf/{folder}/{job['uid']}.wav"


def write(out, layout):
    jobs = [j for j in layout["jobs"] if j["task"] == "sf"]
    root = out / "sf"
    root.mkdir(parents=True, exist_ok=True)
    iob, trans = [], []
    for j in jobs:
        words = j["text"].upper().split()
        iob.append(f"{j['uid']} BOS {' '.join(words)} EOS\tO {' '.join(j['slots'])} {j['label']}")
        trans.append(f"{j['uid']} {' '.join(words)}")
    (root / "all.iob.snips.txt").write_text("\n".join(iob) + "\n")
    (root / "all-trans.txt").write_text("\n".join(trans) + "\n")
    (root / "slots.txt").write_text("\n".join(("O",) + tuple(sorted(SLOTS))))

"""Generate the dataworth sample corpus: six data providers, four nightly shards, standing queries.

Run `python sample/make_corpus.py` to (re)write, next to this file, shards/night-01.jsonl .. night-04.jsonl
(one JSON object a line: {"id", "provider", "text"}, or {"id", "provider", "prompt", "response"} for qa-tutor) and
queries.jsonl (12 standing queries, model outputs to value, two per provider). Output is deterministic.
All text is self-written: it comes only from the templates and word lists below, written by the dataworth project
(geo-facts describes invented places). The project dedicates this script and its output to the public domain (CC0-1.0).
"""
import itertools
import json
import random
from pathlib import Path

SEED = 20240611
HERE = Path(__file__).resolve().parent
LO, HI = 150, 600  # characters per example: its text, or prompt + response


def w(s):
    return s.split("|")


def an(phrase):
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


# ---- weather-desk. SKIES: sky -> (lowest high, highest high, wet?)
CITIES = w("Lisbon|Oslo|Nairobi|Osaka|Denver|Cork|Perth|Quito|Tallinn|Halifax|Marseille|Porto|Hobart|Windhoek|"
           "Valparaiso|Tromso|Glasgow|Montreal|Auckland|Reykjavik")
DAYS = w("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday")
DIRS = w("north|northeast|east|southeast|south|southwest|west|northwest")
SKIES = {"clear skies": (8, 30, 0), "broken cloud": (5, 24, 0), "a grey overcast": (2, 18, 0), "patchy fog": (1, 14, 0),
         "scattered showers": (6, 22, 1), "steady rain": (4, 17, 1), "light drizzle": (5, 15, 1), "snow": (-12, 0, 0),
         "thunderstorms": (18, 32, 1), "bright sunshine": (14, 35, 0), "hazy sunshine": (20, 38, 0),
         "sleet turning to snow": (-6, 3, 0), "frost then sunny spells": (-4, 8, 0)}
OUTLOOK = w("warmer and drier into the weekend|a cold front arrives late on Thursday|rain clearing east by midweek|"
            "a hot spell building from the south|unsettled, with bands of showers|winds easing as high pressure builds")
ADVICE = {"ice": "Watch for ice on paths after dark.", "wind": "Drivers should allow extra time on exposed roads.",
          "wet": "Carry an umbrella if you are heading out.", "sun": "Sun cream is a wise idea by midday.",
          "mild": "A good day for drying washing, or a walk at lunchtime."}


def weather(rng):
    city, day, part = rng.choice(CITIES), rng.choice(DAYS), rng.choice(w("morning|afternoon|evening"))
    sky, (a, b, wet) = rng.choice(list(SKIES.items()))
    high, wd, ws = rng.randint(a, b), rng.choice(DIRS), rng.randrange(5, 65, 5)
    low, force = high - rng.randint(4, 11), ["light", "moderate", "fresh", "strong", "gale-force"][min(ws // 13, 4)]
    key = "ice" if high <= 2 else "wind" if ws >= 40 else "wet" if wet else "sun" if high >= 22 else "mild"
    opener = rng.choice([f"Weather for {city}, {day} {part}: {sky}.", f"Here is the {part} update for {city}: {sky}.",
                         f"{city} forecast for {day}. Expect {sky} through the {part}.",
                         f"{day} in {city} brings {sky}, according to the weather desk."])
    temp = rng.choice([f"Highs near {high} C, lows around {low} C.", f"A top of {high} C and a low of {low} C.",
                       f"The temperature peaks at {high} C and drops to {low} C after dark."])
    wind = rng.choice([f"Winds from the {wd} at {ws} km/h, gusting to {ws + rng.randrange(10, 35, 5)}.",
                       f"A {force} {wd} wind of about {ws} km/h.",
                       f"The wind turns {wd} and blows at {ws} km/h, {force} at times."])
    extras = [f"Humidity {rng.randint(30, 95)} percent, pressure {rng.randint(985, 1035)} hPa.", ADVICE[key],
              f"Outlook: {rng.choice(OUTLOOK)}.", f"Sunset at {rng.randint(17, 21)}:{rng.randrange(0, 60, 5):02d}."]
    return {"text": " ".join([opener, temp, wind] + rng.sample(extras, rng.randint(1, 3)))}


# ---- kitchen-notes. MAINS, SPICES: "word in the dish name:ingredient as named in the steps"
MAINS = [m.split(":") for m in w(
    "chickpea:chickpeas|lentil:red lentils|chicken:chicken thighs|mushroom:mushrooms|salmon:salmon fillets|tofu:"
    "firm tofu|squash:butternut squash|potato:new potatoes|cauliflower:cauliflower|barley:pearl barley|bean:white "
    "beans|aubergine:aubergine|prawn:prawns|sweet potato:sweet potatoes")]
SPICES = [s.split(":") for s in w(
    "smoky:smoked paprika|cumin:ground cumin|thyme:dried thyme|lemon:lemon zest|dill:chopped dill|rosemary:fresh "
    "rosemary|spicy:chili flakes|coriander:ground coriander|saffron:a pinch of saffron|masala:garam masala|"
    "fennel:fennel seeds|ginger:grated ginger")]
AROMATICS = w("a diced onion|two sliced leeks|three cloves of garlic|two chopped shallots|a stick of celery and a "
              "carrot|a sliced red onion|a bunch of spring onions")
LIQUIDS = w("vegetable stock|chicken stock|coconut milk|tomato passata|white wine|water|miso broth")
GARNISH = w("a handful of parsley|toasted seeds|a spoon of yogurt|grated parmesan|a squeeze of lime|crisp fried "
            "onions|torn basil leaves|a drizzle of chili oil")
TIPS = w("It keeps for three days in the fridge.|Swap the stock for water and a spoon of miso if that is what you "
         "have.|Double the batch and freeze half.|Taste before serving; it often wants more acid than you think.")
LINKS = w("First,|Then|Next,|After that,|Once it smells good,")


def kitchen(rng):
    (dish_word, main), (flavour, spice) = rng.choice(MAINS), rng.choice(SPICES)
    form = rng.choice(w("stew|soup|traybake|skillet|curry|pie|pilaf|gratin|hash|broth"))
    dish, serves = f"{flavour} {dish_word} {form}", rng.randint(2, 6)
    pan = rng.choice(w("wide pan|heavy pot|large skillet|casserole dish"))
    steps = [f"Heat {rng.randint(2, 4)} tablespoons of olive oil in a {pan} over {rng.choice(w('medium|high'))} heat.",
             f"Add {rng.choice(AROMATICS)} and cook for {rng.randint(3, 9)} minutes, stirring, until soft.",
             f"Stir in {rng.randrange(200, 800, 50)} g {main} with {spice}.",
             f"Pour in {rng.randrange(250, 1000, 50)} ml {rng.choice(LIQUIDS)} and simmer for "
             f"{rng.randrange(10, 45, 5)} minutes.",
             f"Season with salt and pepper, then finish with {rng.choice(GARNISH)}."]
    if form in ("traybake", "pie", "gratin"):
        steps[0] = f"Preheat the oven to {rng.randrange(180, 230, 10)} C and warm a little oil in a {pan}."
        steps[3] = f"Spread everything in the dish and bake for {rng.randrange(20, 50, 5)} minutes until golden."
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
    linked = " ".join(f"{link} {s[0].lower()}{s[1:]}" for link, s in zip(LINKS, steps))
    body = rng.choice([f"Recipe: {dish} (serves {serves}).\n{numbered}", f"How to make {an(dish)} for {serves}. "
                       f"{linked}", f"Kitchen note - {dish}. " + " ".join(steps[1:])])
    return {"text": body + (f" Tip: {rng.choice(TIPS)}" if rng.random() < 0.5 else "")}


# ---- fable-house. PLOTS: (plot, morals); {fx} becomes e.g. "a proud fox", {ax} "an otter"
ANIMALS = w("fox|hare|tortoise|crow|badger|heron|mouse|bear|goat|owl|otter|wren|beaver|ant|lizard|magpie|squirrel|"
            "stag|frog|wolf")
FILL = {"place": w("at the edge of a birch wood|beside a cold river|on a windy hill|in a reed marsh|under the "
                   "roots of an old oak|near a farmer's orchard|among the dunes by the sea"),
        "work": w("gathering seeds|stacking sticks|mending its nest|digging a burrow|drying berries"),
        "trouble": w("the first hard frost|a week of flood|a bitter winter|the long drought|a storm"),
        "treasure": w("a heap of ripe plums|a pile of hazelnuts|a carpet of fallen apples"),
        "food": w("a piece of cheese|a crust of bread|a ripe fig|a honeycomb"), "season": w("autumn|spring|summer"),
        "trap": w("a hunter's net|a tangle of brambles|a deep pit|a snare of wire")}
PLOTS = [
    ("{fx} lived {place}. Every day it laughed at the {y}, who was busy {work}. When {trouble} came, the {x} had "
     "nothing put by, and it was the {y} who shared its store.",
     "Work done in fair weather is shelter in foul weather.|Those who mock the careful often need them."),
    ("one {season} day {fx} found {treasure} {place}. It tried to carry all of it at once, refused the {y}'s "
     "offer of help, and stumbled into the stream. Everything was lost.",
     "Grasping at everything leaves you holding nothing.|Accept help before the load becomes a loss."),
    ("{ax} sat {place} with {food}. A clever {y} praised its fine voice and begged for a song. The flattered {x} "
     "opened its mouth to sing, the food fell, and the {y} ran off with it.",
     "Sweet words often come with an empty basket.|Be careful when praise costs the speaker nothing."),
    ("a large {x} laughed when a small {y} asked to be spared. Later, the {x} was caught in {trap} {place}. The "
     "{y} heard its cries and worked all night until it was free.",
     "No friend is too small to matter.|Kindness shown to the weak is repaid when you are weak."),
    ("{fx} promised the {y} it would keep watch {place}, then slept in the sun. When {trouble} came, no one had "
     "been warned, and the {y} never trusted the {x} again.",
     "A promise broken once is doubted forever.|Trust is slow to build and quick to spend."),
]


def fable(rng):
    x, y = rng.sample(ANIMALS, 2)
    plot, morals = rng.choice(PLOTS)
    flaw = rng.choice(w("proud|greedy|boastful|lazy|vain|impatient|careless|envious|stubborn|idle"))
    fill = {key: rng.choice(options) for key, options in FILL.items()}
    story = plot.format(x=x, y=y, fx=an(f"{flaw} {x}"), ax=an(x), **fill)
    opener = rng.choice(["", "Long ago, ", "They tell this tale in the hills: ", "A fable. "])
    story = opener + (story if opener.endswith((", ", ": ")) else story[0].upper() + story[1:])
    moral = rng.choice(w(morals))
    return {"text": f"{story} " + rng.choice([f"Moral: {moral}", f"The moral: {moral}",
                                               f"And so we learn: {moral[0].lower()}{moral[1:]}"])}


# ---- geo-facts. An invented world, one country a row; neighbouring rows share a border:
# country|capital|river|highest mountain|river mouth|climate|exports|winters|summers
WORLD = [r.split("|") for r in [
    "Valdoria|Hollin|Sarn|Mount Eskel|the Grey Sea|temperate|timber and wool|mild and wet|warm",
    "Merrowland|Saltmarch|Merrow|Mount Brae|the Grey Sea|temperate|fish and salt|mild and wet|warm",
    "Oskaveth|Vesk|Oska|Mount Ostrin|Lake Orrin|subarctic|iron ore and furs|long and dark|short and cool",
    "Tarrin|Amberly|Tarra|Mount Tarn|Lake Orrin|alpine|cheese and slate|snowy|cool and bright",
    "Quellmar|Quell|Quill|Mount Quorra|the Amber Sea|mediterranean|olives and wine|mild|hot and dry",
    "Sundavia|Sunport|Sunda|Mount Solenne|the Amber Sea|arid|copper and dates|cold at night|scorching",
    "Korrath|Karsk|Korr|Mount Karrak|the Salt Gulf|arid|salt and glass|cold at night|scorching",
    "Elmesse|Lisette|Elm|Mount Elda|the Salt Gulf|tropical|cocoa and rubber|warm and humid|hot and rainy",
    "Pellucia|Pella|Lumen|Mount Pelleth|the Quiet Ocean|tropical|spices and coffee|warm and humid|hot and rainy",
    "Norvald|Fennick|Vell|Mount Virel|the Quiet Ocean|subarctic|fish and timber|long and dark|short and cool"]]
_wr = random.Random(f"{SEED}:world")  # one set of numbers per place, so facts agree across examples
STATS = [{"pop": _wr.randrange(80_000, 2_500_000, 10_000), "length": _wr.randrange(120, 1400, 10),
          "height": _wr.randrange(900, 5200, 10), "area": _wr.randrange(8_000, 400_000, 1_000),
          "dir": _wr.choice(DIRS)} for _ in WORLD]


def geo(rng):
    i, j = rng.sample(range(len(WORLD)), 2)
    (c, cap, river, mount, mouth, clim, exports, winters, summers), s = WORLD[i], STATS[i]
    (d, _, river_d, *_), t = WORLD[j], STATS[j]
    facts = [f"{c} is {an(clim)} country on the shores of {mouth}.",
             rng.choice([f"The capital of {c} is {cap}, a city of about {s['pop']:,} people.",
                         f"{cap}, home to about {s['pop']:,} people, is the capital of {c}."]),
             f"The {river} River rises on {mount} and flows {s['dir']} for {s['length']} km into {mouth}.",
             f"At {s['height']:,} metres, {mount} is the highest point in {c}.",
             f"{c} borders {WORLD[i - 1][0]} and {WORLD[(i + 1) % len(WORLD)][0]}.",
             f"{c} covers {s['area']:,} square kilometres, {'more' if s['area'] > t['area'] else 'less'} than {d}.",
             f"The main exports of {c} are {exports}.", f"Winters in {c} are {winters} and summers are {summers}.",
             f"The {river} is {'longer' if s['length'] > t['length'] else 'shorter'} than the {river_d} River of {d}, "
             f"which runs for {t['length']} km."]
    opener = rng.choice(["", f"Fact file: {c}. ", f"Geography note - {c}. ", "Did you know? "])
    return {"text": opener + " ".join(rng.sample(facts, rng.randint(3, 5)))}


# ---- code-snippets. Template lines: descriptions / names / example arguments / code ({xs} a list, {x} an item)
CODE = [t.split("\n", 3) for t in [
    "Return the sum of the squares of a list of numbers.|Add up the square of every number.\nsum_of_squares|"
    "square_total\n[1, 2, 3, 4]\ndef {f}({xs}):\n    total = 0\n    for {x} in {xs}:\n        total += {x} * {x}\n"
    "    return total",
    "Count the vowels in a piece of text.|Return how many letters of a string are vowels.\ncount_vowels|vowel_count"
    "\n\"Influence functions\"\ndef {f}(text):\n    count = 0\n    for ch in text.lower():\n"
    "        if ch in \"aeiou\":\n            count += 1\n    return count",
    "Return the mean of a list, or 0.0 when it is empty.|Average a list of numbers safely.\nmean|average\n"
    "[3, 5, 10]\ndef {f}({xs}):\n    if not {xs}:\n        return 0.0\n    return sum({xs}) / len({xs})",
    "Convert Celsius readings to Fahrenheit, rounded to one decimal.\nto_fahrenheit|c_to_f\n[0, 21.5, -4]\n"
    "def {f}(readings):\n    return [round(c * 9 / 5 + 32, 1) for c in readings]",
    "Count how often each word appears in a text.\nword_counts|word_frequency\n\"the cat saw the dog\"\n"
    "def {f}(text):\n    counts = {{}}\n    for word in text.lower().split():\n"
    "        counts[word] = counts.get(word, 0) + 1\n    return counts",
    "Remove duplicates from a list but keep the first-seen order.\ndedupe|unique_in_order\n[3, 1, 3, 2]\n"
    "def {f}({xs}):\n    seen, result = set(), []\n    for {x} in {xs}:\n        if {x} not in seen:\n"
    "            seen.add({x})\n            result.append({x})\n    return result",
    "Return the first count Fibonacci numbers.\nfibonacci|fib_list\n8\ndef {f}(count):\n    numbers = [0, 1]\n"
    "    while len(numbers) < count:\n        numbers.append(numbers[-1] + numbers[-2])\n    return numbers[:count]",
]]


def code(rng):
    descs, names, args, template = rng.choice(CODE)
    desc, name = rng.choice(w(descs)), rng.choice(w(names))
    xs, x = rng.choice([("values", "v"), ("numbers", "n"), ("items", "item"), ("data", "x")])
    src, namespace = template.format(f=name, xs=xs, x=x), {}
    exec(src, namespace)  # runs our own template, so the printed example result is always right
    result = eval(f"{name}({args})", namespace)
    src = f"# {desc}\n{src}" if rng.random() < 0.5 else src.replace(":\n", f':\n    """{desc}"""\n', 1)
    return {"text": f"{src}\n\nprint({name}({args}))  # -> {result!r}"}


# ---- qa-tutor: prompt/response pairs. UNITS: "one big unit:big units:small units:small units in one big unit"
UNITS = [(one, many, small, int(k)) for one, many, small, k in (u.split(":") for u in w(
    "kilometre:kilometres:metres:1000|metre:metres:centimetres:100|kilogram:kilograms:grams:1000|litre:litres:"
    "millilitres:1000|hour:hours:minutes:60|minute:minutes:seconds:60|day:days:hours:24|week:weeks:days:7|"
    "foot:feet:inches:12|yard:yards:feet:3"))]


def tutor(rng):
    a, b = rng.randint(12, 98), rng.choice([n for n in range(13, 99) if n % 10])
    ta, tb, oa, ob, big = a // 10 * 10, b // 10 * 10, a % 10, b % 10, a + 3 * b
    d, q, c = rng.randint(3, 15), rng.randint(4, 25), 5 * rng.randint(-8, 20)
    pct, base = rng.choice([15, 20, 25, 30, 35, 40, 45, 60, 75]), 20 * rng.randint(2, 40)
    (one, many, small, k), n = rng.choice(UNITS), rng.randint(2, 40)
    kinds = [  # (ways to ask, worked answer)
        ([f"What is {a} + {b}?", f"Add {a} and {b}.", f"Work out the sum of {a} and {b}."],
         f"Split both numbers into tens and ones and add each part. Tens: {ta} + {tb} = {ta + tb}. Ones: "
         f"{oa} + {ob} = {oa + ob}. Together: {ta + tb} + {oa + ob} = {a + b}. Answer: {a + b}."),
        ([f"What is {big} - {b}?", f"Subtract {b} from {big}."],
         f"Take away the tens, then the ones: {big} - {tb} = {big - tb}, and {big - tb} - {ob} = {big - b}. "
         f"Check by adding back: {big - b} + {b} = {big}. Answer: {big - b}."),
        ([f"Calculate {a} x {b}.", f"What is {a} times {b}?", f"Multiply {a} by {b}."],
         f"Split {b} into {tb} and {ob}. Then {a} x {tb} = {a * tb} and {a} x {ob} = {a * ob}. "
         f"Adding the two parts: {a * tb} + {a * ob} = {a * b}. Answer: {a * b}."),
        ([f"What is {d * q} divided by {d}?", f"Share {d * q} marbles among {d} children. How many each?"],
         f"Ask how many groups of {d} fit into {d * q}. Since {d} x {q} = {d * q}, each share is {q}, "
         f"with nothing left over. Answer: {q}."),
        ([f"What is {pct}% of {base}?", f"A coat costs {base} dollars. How much is a {pct}% discount?"],
         f"10% of {base} is {base // 10}, so 5% is half of that, {base // 20}. {pct}% is {pct // 5} lots of 5%, "
         f"which is {pct // 5} x {base // 20} = {base * pct // 100}. Answer: {base * pct // 100}."),
        ([f"Convert {n} {many} to {small}.", f"How many {small} are there in {n} {many}?"],
         f"One {one} is {k} {small}, so to change {many} into {small} multiply by {k}: {n} x {k} = {n * k}. "
         f"Answer: {n * k} {small}."),
        ([f"Convert {n * k} {small} to {many}.", f"How many {many} is {n * k} {small}?"],
         f"One {one} is {k} {small}, so to change {small} into {many} divide by {k}: {n * k} / {k} = {n}. "
         f"Answer: {n} {many}."),
        ([f"Convert {c} degrees Celsius to Fahrenheit.", f"What is {c} C in Fahrenheit?"],
         f"Multiply by 9, divide by 5, then add 32. {c} x 9 = {c * 9}, {c * 9} / 5 = {c * 9 // 5}, and "
         f"{c * 9 // 5} + 32 = {c * 9 // 5 + 32}. Answer: {c * 9 // 5 + 32} degrees Fahrenheit."),
    ]
    asks, answer = rng.choice(kinds)
    return {"prompt": rng.choice(asks) + rng.choice(["", " Show your working."]), "response": answer}


# ---- assembly. PLAN: provider -> (generator, examples on nights 1-4); code-snippets starts on night 2
PLAN = {"weather-desk": (weather, (22, 20, 18, 20)), "kitchen-notes": (kitchen, (14, 16, 12, 14)),
        "geo-facts": (geo, (12, 10, 14, 12)), "fable-house": (fable, (10, 10, 10, 10)),
        "qa-tutor": (tutor, (10, 8, 12, 10)), "code-snippets": (code, (0, 6, 4, 6))}


def draw(rng, gen, n, seen):
    """n new examples from gen, LO..HI characters long, whose text or response is not yet in seen."""
    out = []
    while len(out) < n:
        item = gen(rng)
        if (key := item.get("text", item.get("response"))) not in seen and LO <= sum(map(len, item.values())) <= HI:
            seen.add(key)
            out.append(item)
    return out


def write_jsonl(path, records):  # encoding="ascii" refuses any non-ASCII character
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="ascii", newline="\n")


def main():
    nights, queries, seen = [[], [], [], []], [], set()
    for name, (gen, counts) in PLAN.items():
        rng = random.Random(f"{SEED}:{name}")
        items, number = iter(draw(rng, gen, sum(counts), seen)), itertools.count(1)
        for night, count in zip(nights, counts):
            night += [{"id": f"{name}-{next(number):03d}", "provider": name, **next(items)} for _ in range(count)]
        # two further draws in the provider's style, unlike any training example, become its queries
        queries += [{"id": f"q-{name}-{k}", **item} for k, item in enumerate(draw(rng, gen, 2, seen), 1)]
    (HERE / "shards").mkdir(exist_ok=True)
    for i, night in enumerate(nights, 1):
        random.Random(f"{SEED}:night-{i}").shuffle(night)
        write_jsonl(HERE / "shards" / f"night-{i:02d}.jsonl", night)
    write_jsonl(HERE / "queries.jsonl", queries)
    print(f"wrote {sum(map(len, nights))} examples in {len(nights)} shards and {len(queries)} queries")


if __name__ == "__main__":
    main()

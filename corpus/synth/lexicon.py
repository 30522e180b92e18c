"""Words of the caption grammar and of the questions: how each event type and each attribute can be said.

Per event type, ``groups`` are (subjects, verbs, takes_adjectives): subjects that take adjectives are bare nouns
("bird"; "~rain" for a mass noun without article), the others carry their own determiner ("someone", "people");
verbs are (finite form agreeing with those subjects, gerund). ``nouns`` are (singular, plural) for countable
nouns; a mass or plural-only noun is given as ("~rain", None). ``moves``: the source can approach or leave.
"""
from __future__ import annotations

SOMEONE = ["someone", "a person", "somebody"]

LEXICON: dict[str, dict] = {
    "beep": {
        "groups": [(["device", "machine", "alarm", "timer", "electronic device", "monitor", "microwave"],
                    [("beeps", "beeping"), ("bleeps", "bleeping")], True)],
        "nouns": [("beep", "beeps"), ("electronic beep", "electronic beeps"), ("tone", "tones"),
                  ("bleep", "bleeps"), ("beeping sound", "beeping sounds"), ("alarm tone", "alarm tones")],
    },
    "bird": {
        "groups": [(["bird", "small bird", "songbird", "little bird", "wild bird"],
                    [("chirps", "chirping"), ("tweets", "tweeting"), ("sings", "singing"), ("calls", "calling"),
                     ("cheeps", "cheeping")], True)],
        "nouns": [("chirp", "chirps"), ("tweet", "tweets"), ("bird call", "bird calls"), ("bird chirp", "bird chirps"),
                  ("birdsong note", "birdsong notes")],
    },
    "knock": {
        "groups": [(SOMEONE + ["a visitor"],
                    [("knocks on a door", "knocking on a door"), ("knocks on the door", "knocking on the door"),
                     ("knocks on wood", "knocking on wood"), ("raps on a door", "rapping on a door"),
                     ("taps on a wooden surface", "tapping on a wooden surface")], False)],
        "nouns": [("knock", "knocks"), ("knock on a door", "knocks on a door"), ("rap", "raps"),
                  ("tap on wood", "taps on wood"), ("knocking sound", "knocking sounds")],
    },
    "bell": {
        "groups": [(["bell", "church bell", "small bell", "metal bell", "chime", "bicycle bell"],
                    [("rings", "ringing"), ("chimes", "chiming"), ("tolls", "tolling"), ("dings", "dinging")], True)],
        "nouns": [("bell ring", "bell rings"), ("chime", "chimes"), ("ding", "dings"), ("bell strike", "bell strikes"),
                  ("ring of a bell", "rings of a bell")],
    },
    "whistle": {
        "groups": [(SOMEONE + ["a man", "a boy"], [("whistles", "whistling"), ("blows a whistle", "blowing a whistle")],
                    False),
                   (["whistle", "tin whistle", "referee's whistle"], [("blows", "blowing"), ("sounds", "sounding")],
                    True)],
        "nouns": [("whistle", "whistles"), ("whistle blast", "whistle blasts"), ("whistled note", "whistled notes"),
                  ("whistling sound", "whistling sounds")],
    },
    "dog": {
        "groups": [(["dog", "guard dog", "pet dog", "hound", "neighbour's dog"],
                    [("barks", "barking"), ("woofs", "woofing"), ("yelps", "yelping")], True)],
        "nouns": [("bark", "barks"), ("dog bark", "dog barks"), ("woof", "woofs"), ("yelp", "yelps")],
    },
    "horn": {
        "groups": [(["a car", "a truck", "a vehicle", "a driver"],
                    [("honks", "honking"), ("honks its horn", "honking its horn"), ("sounds a horn", "sounding a horn")],
                    False),
                   (["car horn", "horn", "truck horn"], [("honks", "honking"), ("blares", "blaring"),
                                                          ("toots", "tooting")], True)],
        "nouns": [("honk", "honks"), ("car horn honk", "car horn honks"), ("horn blast", "horn blasts"),
                  ("toot", "toots"), ("beep of a horn", "beeps of a horn")],
    },
    "siren": {
        "groups": [(["siren", "police siren", "emergency siren", "ambulance siren", "alarm siren"],
                    [("wails", "wailing"), ("blares", "blaring"), ("sounds", "sounding"), ("howls", "howling"),
                     ("goes off", "going off")], True)],
        "nouns": [("siren", "sirens"), ("wailing siren", "wailing sirens"), ("siren wail", "siren wails"),
                  ("~wail of a siren", None)],
        "moves": True,
    },
    "engine": {
        "groups": [(["engine", "motor", "car engine", "generator", "machine", "diesel engine"],
                    [("hums", "humming"), ("runs", "running"), ("rumbles", "rumbling"), ("idles", "idling"),
                     ("drones", "droning"), ("whirs", "whirring")], True)],
        "nouns": [("engine hum", "engine hums"), ("running engine", "running engines"), ("motor", "motors"),
                  ("drone", "drones"), ("~humming of a motor", None), ("~engine noise", None)],
        "moves": True,
    },
    "buzz": {
        "groups": [(["insect", "fly", "bee", "mosquito", "wasp", "bug"],
                    [("buzzes", "buzzing"), ("drones", "droning"), ("hums", "humming"), ("flies around", "flying around")],
                    True)],
        "nouns": [("buzz", "buzzes"), ("buzzing insect", "buzzing insects"), ("buzzing sound", "buzzing sounds"),
                  ("~buzzing", None), ("~droning of an insect", None)],
    },
    "rain": {
        "groups": [(["~rain", "~rainwater", "~water"],
                    [("falls", "falling"), ("pours", "pouring"), ("patters", "pattering"), ("comes down", "coming down"),
                     ("falls on a roof", "falling on a roof"), ("drips steadily", "dripping steadily")], True)],
        "nouns": [("~rain", None), ("~rainfall", None), ("~falling rain", None), ("rain shower", "rain showers"),
                  ("~pattering of rain", None), ("~raindrops", None)],
    },
    "wind": {
        "groups": [(["~wind", "~air", "breeze"],
                    [("blows", "blowing"), ("howls", "howling"), ("gusts", "gusting"), ("whooshes", "whooshing"),
                     ("rushes past", "rushing past")], True)],
        "nouns": [("~wind", None), ("~gusting wind", None), ("~blowing wind", None), ("~wind noise", None),
                  ("~gusts of wind", None), ("~howling wind", None)],
    },
    "footsteps": {
        "groups": [(SOMEONE + ["a man", "a woman", "a pedestrian"],
                    [("walks", "walking"), ("walks on a hard floor", "walking on a hard floor"),
                     ("takes steps", "taking steps"), ("walks by", "walking by"), ("paces", "pacing")], False)],
        "nouns": [("~footsteps", None), ("~steps", None), ("~walking footsteps", None), ("~shoes on a floor", None),
                  ("~footfalls", None)],
        "moves": True,
    },
    "babble": {
        "groups": [(["people", "several people", "a group of people", "voices"],
                    [("talk", "talking"), ("chatter", "chattering"), ("murmur", "murmuring"),
                     ("converse", "conversing")], False),
                   (["a crowd", "a group"], [("murmurs", "murmuring"), ("chatters", "chattering"),
                                             ("talks", "talking")], False)],
        "nouns": [("~chatter", None), ("~babble", None), ("~murmuring voices", None), ("conversation", "conversations"),
                  ("~crowd noise", None), ("~indistinct speech", None)],
    },
}

LOUD_ADJ = {"loud": ["loud", "very loud", "strong", "powerful"], "quiet": ["quiet", "faint", "soft", "gentle"]}
LOUD_ADV = {"loud": ["loudly", "noisily", "very loudly"], "quiet": ["quietly", "softly", "faintly", "gently"]}
PITCH_ADJ = {"high": ["high pitched", "shrill", "high"], "low": ["low pitched", "low", "deep"]}
PITCH_ADV = {"high": ["in a high pitch", "at a high pitch", "with a high tone"],
             "low": ["in a low pitch", "at a low pitch", "with a deep tone"]}
COUNT_ADV = {"1": ["once", "one time", "a single time", "just once"],
             "2": ["twice", "two times", "two times in a row"],
             "3": ["three times", "thrice", "three times in a row"],
             "several": ["several times", "repeatedly", "multiple times", "many times", "over and over"]}
COUNT_DET = {"1": ["a single", "one", "a lone"], "2": ["two", "a pair of"], "3": ["three"],
             "several": ["several", "multiple", "a series of", "a number of", "many"]}
LENGTH_ADV = {"short": ["briefly", "for a moment", "for a short time", "for a brief moment", "for a second"],
              "long": ["continuously", "for a long time", "steadily", "constantly", "for a while", "without stopping"]}
LENGTH_ADJ = {"short": ["short", "brief", "quick"], "long": ["long", "continuous", "constant", "steady", "prolonged"]}
SPANS_ADV = ["throughout", "the whole time", "throughout the recording", "the entire time"]
FADE_VP = {"in": ["and grows louder", "and gets louder", "and gradually gets louder", "and fades in",
                  "and slowly becomes louder", ", getting louder and louder", "and builds up"],
           "out": ["and fades away", "and fades out", "and dies down", "and gradually gets quieter",
                   ", slowly fading out", "and trails off", "and gradually disappears"]}
FADE_NP = {"in": ["that grows louder", "that gets louder", "growing louder", "fading in", "which slowly builds up"],
           "out": ["that fades away", "that dies down", "fading out", "slowly fading away", "which trails off"]}
MOVE_VP = {"in": ["and comes closer", "and approaches", ", approaching"],
           "out": ["and moves away", "and goes off into the distance", ", moving away"]}
BACKGROUND_NP = {"white": ["static", "a steady hiss", "hissing noise", "white noise", "a constant hiss"],
                 "pink": ["background noise", "a constant noise", "ambient noise", "a steady noise", "room noise"],
                 "brown": ["a dull rumble", "a muffled rumble", "a deep background rumble", "rumbling noise"]}
QUIET_PLACE = [" in a quiet room", " in a quiet place", " in an otherwise silent room", " in a quiet environment"]

# Words of the questions (corpus.synth.questions), taken from the caption words above but only those naming one type
# alone: the captions' "machine" is a beeping device and an engine, "alarm" a beep and a siren, "blast" a whistle and
# a horn, so a question using them would be ambiguous. Per type: ``answer``, the sound's name as an answer
# ("what comes first?" -> "dog"); ``the``, definite references taking a singular verb ("is the knocking loud?");
# ``there``, phrases after "is there" ("a dog barking"); for countable types ``counted``, subject + bare verb after
# "how many times does" ("the dog bark"), and ``units``, plural nouns after "how many" ("barks").
QUESTION_WORDS: dict[str, dict[str, list[str] | str]] = {
    "beep": {"answer": "beeping",
             "the": ["the beeping", "the device", "the timer", "the electronic beeping", "the bleeping"],
             "there": ["a device beeping", "a timer beeping", "an electronic device beeping", "a monitor bleeping"],
             "counted": ["the device beep", "the timer beep", "the monitor bleep"],
             "units": ["beeps", "bleeps", "electronic beeps"]},
    "bird": {"answer": "bird", "the": ["the bird", "the small bird", "the songbird", "the chirping"],
             "there": ["a bird chirping", "a bird singing", "a songbird calling", "a small bird tweeting"],
             "counted": ["the bird chirp", "the bird tweet", "the songbird call"],
             "units": ["chirps", "bird calls", "tweets"]},
    "knock": {"answer": "knocking", "the": ["the knocking", "the knocking on the door", "the rapping"],
              "there": ["someone knocking on a door", "a person knocking on wood", "somebody rapping on a door",
                        "a visitor knocking on the door"],
              "counted": ["someone knock", "the visitor knock on the door", "the person rap on the door"],
              "units": ["knocks", "knocks on the door", "raps"]},
    "bell": {"answer": "bell", "the": ["the bell", "the church bell", "the chime", "the ringing"],
             "there": ["a bell ringing", "a church bell tolling", "a small bell chiming", "a metal bell dinging"],
             "counted": ["the bell ring", "the church bell toll", "the bell chime"],
             "units": ["bell rings", "chimes", "dings"]},
    "whistle": {"answer": "whistle", "the": ["the whistle", "the whistling", "the tin whistle"],
                "there": ["someone whistling", "a whistle blowing", "a referee's whistle blowing",
                          "a person blowing a whistle"],
                "counted": ["someone whistle", "the whistle blow", "the referee's whistle blow"],
                "units": ["whistles", "whistled notes", "whistling sounds"]},
    "dog": {"answer": "dog", "the": ["the dog", "the barking", "the guard dog", "the hound"],
            "there": ["a dog barking", "a dog woofing", "a guard dog barking", "a hound yelping"],
            "counted": ["the dog bark", "the hound bark", "the dog woof"],
            "units": ["barks", "dog barks", "woofs"]},
    "horn": {"answer": "horn", "the": ["the horn", "the car horn", "the honking", "the truck horn"],
             "there": ["a car honking", "a car horn honking", "a horn blaring", "a truck honking its horn"],
             "counted": ["the horn honk", "the car honk", "the driver sound the horn", "the horn toot"],
             "units": ["honks", "car horn honks", "toots"]},
    "siren": {"answer": "siren", "the": ["the siren", "the police siren", "the emergency siren", "the wailing siren"],
              "there": ["a siren wailing", "a police siren blaring", "an emergency siren sounding",
                        "an ambulance siren howling"]},
    "engine": {"answer": "engine", "the": ["the engine", "the motor", "the engine hum", "the generator"],
               "there": ["an engine humming", "a motor running", "a diesel engine idling", "a generator droning"]},
    "buzz": {"answer": "buzzing", "the": ["the buzzing", "the insect", "the buzzing insect", "the bee"],
             "there": ["an insect buzzing", "a bee buzzing", "a fly buzzing", "a wasp buzzing"]},
    "rain": {"answer": "rain", "the": ["the rain", "the rainfall", "the falling rain", "the pattering of rain"],
             "there": ["rain falling", "rain pouring", "rain falling on a roof", "rain coming down"]},
    "wind": {"answer": "wind", "the": ["the wind", "the gusting wind", "the blowing wind", "the breeze"],
             "there": ["wind blowing", "wind howling", "wind gusting", "a breeze blowing"]},
    "footsteps": {"answer": "footsteps", "the": ["the walking", "the sound of footsteps", "the sound of the steps"],
                  "there": ["someone walking", "a person walking", "somebody walking on a hard floor",
                            "a pedestrian walking by"]},
    "babble": {"answer": "voices", "the": ["the talking", "the chatter", "the babble", "the murmuring"],
               "there": ["a crowd murmuring", "a group of people talking", "a crowd chattering", "a group talking"]},
}

"""Items of general-labelled sources that ask how the human body works: labelled `biomedical`, one by one.

Whole sources get one role (an MMLU subject, a benchmark), but some general sources hold questions a user would
send to the biomedical specialist: high school psychology's senses, nerves, brain and hormones, human sexuality's
reproductive physiology, trivia about organs and diseases, everyday health questions. Left `general`, they
taught the router that questions about organs and senses are general ones. Each id below was read and picked by
hand from the candidates a list of anatomy, physiology and medical terms matched in these sources (the rule: the
answer needs knowledge of the body, its organs, senses, diseases or drugs; psychology of behaviour, therapy and
ethics stays general). An id is `source#n` from `data.iter_items`, stable for the pinned packages;
`tests/router/test_data.py` checks that each still names an item of the source it is listed under.
"""

from __future__ import annotations

BIOMEDICAL = {
    "mmlu/high school psychology": (
        15977, 15989, 15995, 15998, 16003, 16006, 16011, 16015, 16019, 16024, 16029, 16035, 16041, 16047, 16065,
        16066, 16067, 16072, 16074, 16075, 16107, 16116, 16119, 16120, 16123, 16129, 16132, 16135, 16141, 16147,
        16150, 16152, 16160, 16164, 16168, 16173, 16175, 16179, 16183, 16189, 16192, 16195, 16199, 16200, 16201,
        16203, 16221, 16232, 16234, 16241, 16266, 16271, 16275, 16280, 16292, 16293, 16300, 16302, 16305, 16309,
        16315, 16316, 16323, 16337, 16353, 16360, 16367, 16373, 16374, 16377, 16380, 16388, 16389, 16393, 16395,
        16396, 16399, 16401, 16409, 16412, 16425, 16427, 16432, 16434, 16440, 16446, 16448, 16462, 16469, 16474,
        16478, 16488, 16496, 16499, 16505,
    ),
    "mmlu/professional psychology": (
        4919, 4927, 4956, 4959, 4988, 4991, 5019, 5024, 5045, 5065, 5109, 5152, 5158, 5177, 5181, 5195, 5202, 5207,
        5215, 5218, 5263, 5325, 5330, 5345, 5363, 5379, 5427, 5437, 5454, 5508, 5523, 5526,
    ),
    "mmlu/human sexuality": (
        13909, 13911, 13915, 13923, 13924, 13935, 13936, 13937, 13940, 13943, 13950, 13953, 13964, 13966, 13967,
        13968, 13970, 13973, 13974, 13976, 13978, 13979, 13981, 13982, 13991, 13995, 13996, 14008, 14009, 14010,
        14019, 14021, 14028, 14035, 14037, 14038,
    ),
    "mmlu/miscellaneous": (
        11578, 11599, 11608, 11620, 11639, 11717, 11719, 11722, 11726, 11886, 11907, 11935, 11970, 12010, 12058,
        12091, 12096, 12098, 12104, 12130, 12136, 12137, 12141, 12194, 12199, 12201, 12227, 12233, 12301, 12325,
        12328,
    ),
    "mmlu/global facts": (4065, 4066),
    "red-trivia": (16850, 16922, 16964),
    "alpaca-eval": (19087, 19111, 19131, 19165, 19178, 19205, 19294, 19381, 19559, 19562, 19622, 19729, 19730),
    "ifeval": (19993, 20038, 20179),
    "mt-bench": (21596,),
}
BIOMEDICAL_IDS = frozenset(f"{source}#{n}" for source, numbers in BIOMEDICAL.items() for n in numbers)

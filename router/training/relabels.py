"""Items of general-labelled sources that a user would send to a specialist: labelled with its role, one by one.

Whole sources get one role (an MMLU subject, a benchmark), but some general sources hold requests for a specialist.
Left `general`, they taught the router that such requests are general ones:

- `BIOMEDICAL` (labels v2): questions about how the human body works -- high school psychology's senses, nerves,
  brain and hormones, human sexuality's reproductive physiology, trivia about organs and diseases, everyday health
  questions. Picked from the candidates a list of anatomy, physiology and medical terms matched in these sources (the
  rule: the answer needs knowledge of the body, its organs, senses, diseases or drugs; psychology of behaviour,
  therapy and ethics stays general).
- `CODE` and `MATH` (labels v5): chat requests to write, fix, convert or explain code or a programming concept
  (`CODE`), or to calculate, solve, prove or explain a mathematical concept (`MATH`), in AlpacaEval, IFEval and
  MT-bench's writing and roleplay questions. The router sent short concept questions ("What is recursion?", "What
  is a derivative?") to `general` with ~0.9: these sources taught it that a chat-style question about code or
  maths is general. Picked from the candidates a list of programming and maths terms matched, and those the labels-v4
  scorer gave code or math >= 0.25. Left general: writing about software (cover letters, product copy), trivia about
  computers (a convention of its own: trivia is general), spreadsheet formulas, logic riddles (MT-bench files them as
  reasoning), and format-only uses of JSON or HTML.

Each id was read and picked by hand. An id is `source#n` from `data.iter_items`, stable for the pinned packages;
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
CODE = {
    "alpaca-eval": (
        19242, 19280, 19284, 19287, 19290, 19303, 19310, 19314, 19337, 19348, 19351, 19370, 19380, 19390, 19394,
        19395, 19397, 19399, 19406, 19408, 19418, 19423, 19429, 19430, 19440, 19453, 19455, 19459, 19473, 19474,
        19475, 19485, 19500, 19501, 19502, 19551, 19552, 19553, 19554, 19555, 19558, 19640, 19652, 19657, 19667,
        19672, 19688, 19689, 19704, 19705, 19716, 19774, 19775, 19776, 19777, 19778, 19779, 19780,
    ),
    "ifeval": (19857, 19866, 20026, 20072, 20183, 20265),
}
MATH = {
    "alpaca-eval": (
        19096, 19139, 19140, 19162, 19184, 19214, 19225, 19258, 19259, 19262, 19306, 19331, 19343, 19349, 19355,
        19391, 19432, 19437, 19477, 19481, 19602, 19603, 19604, 19605, 19606, 19781, 19782, 19783,
    ),
    "ifeval": (19933, 19938, 20029, 20065, 20167, 20187, 20252, 20329, 20330),
    "mt-bench": (21600, 21602),
}
RELABELED = {f"{source}#{n}": domain for domain, picks in (("biomedical", BIOMEDICAL), ("code", CODE), ("math", MATH))
             for source, numbers in picks.items() for n in numbers}  # item id -> its domain

"""The demo's own small Chinese corpus, generated from facts and templates written here (no downloads).

Five task families: provincial capitals, antonyms, Chinese number words written as digits, the number after
a number (in words), and small additions. (Digits -> words is stated in pretraining but not asked: a tiny T5
trained for minutes on CPU does not learn to tell "42" from "24" by its relative position bias alone, and
answers such questions with the digits reversed about half the time.) Every question is a (fact, phrasing) combination. The held-out split takes combinations never seen
in training, while every fact and every phrasing is still seen in some other combination, so answering them
needs the model to generalise across phrasings, not to recall a string.

Pretraining data states the facts as sentences to complete; SFT data asks the training combinations as
questions; the held-out set asks the rest.
"""

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CAPITALS = {
    "河北": "石家庄",
    "山西": "太原",
    "辽宁": "沈阳",
    "吉林": "长春",
    "黑龙江": "哈尔滨",
    "江苏": "南京",
    "浙江": "杭州",
    "安徽": "合肥",
    "福建": "福州",
    "江西": "南昌",
    "山东": "济南",
    "河南": "郑州",
    "湖北": "武汉",
    "湖南": "长沙",
    "广东": "广州",
    "海南": "海口",
    "四川": "成都",
    "贵州": "贵阳",
    "云南": "昆明",
    "陕西": "西安",
    "甘肃": "兰州",
    "青海": "西宁",
    "台湾": "台北",
    "内蒙古": "呼和浩特",
    "广西": "南宁",
    "西藏": "拉萨",
    "宁夏": "银川",
    "新疆": "乌鲁木齐",
}
ANTONYMS = [
    ("大", "小"),
    ("高", "矮"),
    ("长", "短"),
    ("快", "慢"),
    ("冷", "热"),
    ("新", "旧"),
    ("多", "少"),
    ("远", "近"),
    ("胖", "瘦"),
    ("早", "晚"),
    ("黑", "白"),
    ("上", "下"),
    ("左", "右"),
    ("前", "后"),
    ("开", "关"),
    ("买", "卖"),
    ("哭", "笑"),
    ("真", "假"),
    ("好", "坏"),
    ("轻", "重"),
    ("深", "浅"),
    ("宽", "窄"),
    ("厚", "薄"),
    ("干", "湿"),
    ("软", "硬"),
    ("强", "弱"),
    ("甜", "苦"),
    ("进", "出"),
    ("来", "去"),
    ("东", "西"),
    ("南", "北"),
    ("明亮", "黑暗"),
    ("简单", "复杂"),
    ("安全", "危险"),
    ("成功", "失败"),
    ("开始", "结束"),
    ("干净", "肮脏"),
    ("勤劳", "懒惰"),
    ("美丽", "丑陋"),
    ("聪明", "愚蠢"),
]
DIGITS = "零一二三四五六七八九"

QUESTION_TEMPLATES = {
    "capital": [
        "{x}的省会是哪里？",
        "{x}的省会是哪座城市？",
        "请问{x}的省会城市是？",
        "{x}省会在哪？",
        "告诉我{x}的省会。",
    ],
    "antonym": ["“{x}”的反义词是什么？", "{x}的反义词是？", "请说出“{x}”的反义词。", "和“{x}”意思相反的词是什么？"],
    "next_number": ["{x}的下一个数是多少？", "{x}后面的数是几？", "比{x}大一的数是？", "{x}加一是多少？"],
    "to_digits": ["{x}写成阿拉伯数字是多少？", "把{x}写成数字。", "“{x}”用数字怎么表示？", "{x}对应的数字是？"],
    "addition": ["{a}加{b}等于多少？", "{a}+{b}=?", "计算{a}加{b}。", "{a}和{b}的和是多少？"],
}
STATEMENTS = {
    "capital": ["{x}的省会是", "{x}省的省会城市是"],
    "antonym": ["{x}的反义词是"],
    "to_words": ["{x}读作"],
    "to_digits": ["{x}写作"],
    "next_number": ["{x}的下一个数是"],
    "addition": ["{a}加{b}等于"],
}


def number_words(n: int) -> str:
    """0..99 in Chinese number words: 7 七, 10 十, 15 十五, 40 四十, 42 四十二."""
    if n < 10:
        return DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else DIGITS[tens]) + "十" + (DIGITS[ones] if ones else "")


def facts() -> list[tuple[str, dict, str]]:
    """(family, template fields, answer) for every fact."""
    items = [("capital", {"x": p}, c) for p, c in CAPITALS.items()]
    items += [("antonym", {"x": a}, b) for a, b in ANTONYMS] + [("antonym", {"x": b}, a) for a, b in ANTONYMS]
    items += [("to_words", {"x": str(n)}, number_words(n)) for n in range(100)]
    items += [("next_number", {"x": number_words(n)}, number_words(n + 1)) for n in range(99)]
    items += [("to_digits", {"x": number_words(n)}, str(n)) for n in range(100)]
    items += [("addition", {"a": a, "b": b}, str(a + b)) for a in range(10) for b in range(10)]
    return items


def build_corpus(seed: int = 0, held_out_fraction: float = 0.2, dpo_rows: int = 480) -> dict[str, list[dict]]:
    """Return {"pretrain", "sft", "held_out": [{"prompt", "response"}], "dpo": [{"prompt", "chosen", "rejected"}]}.

    The DPO pairs ask SFT questions again, with a plausible wrong answer of the same family as `rejected`."""
    rng = random.Random(seed)
    pretrain, sft, held_out, dpo = [], [], [], []
    answers_by_family: dict[str, list[str]] = {}
    for family, _, answer in facts():
        answers_by_family.setdefault(family, []).append(answer)
    for family, fields, answer in facts():
        for template in STATEMENTS[family]:
            pretrain.append({"prompt": template.format(**fields), "response": answer + "。"})
        templates = QUESTION_TEMPLATES.get(family)
        if not templates:  # stated in pretraining only
            continue
        # Hold out at most one phrasing per fact, so each fact is still asked in the other phrasings.
        held = rng.randrange(len(templates)) if rng.random() < held_out_fraction * len(templates) / 2 else None
        wrong = [a for a in answers_by_family[family] if a != answer]
        for index, template in enumerate(templates):
            row = {"prompt": template.format(**fields), "response": answer}
            if index == held:
                held_out.append(row)
            else:
                sft.append(row)
                dpo.append({"prompt": row["prompt"], "chosen": answer, "rejected": rng.choice(wrong)})
    for rows in (pretrain, sft, held_out, dpo):
        rng.shuffle(rows)
    return {"pretrain": pretrain, "sft": sft, "held_out": held_out, "dpo": dpo[:dpo_rows]}


def write_corpus(output_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write pretrain, sft, held_out and dpo .parquet files; return their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in build_corpus(seed).items():
        paths[split] = output_dir / f"{split}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), paths[split])
    return paths

"""Mandarin sentences for the second-language corpus: a small grammar over built-in words.

Everything is written in Chinese characters (numbers too): a Latin letter would switch eSpeak NG
to English mid-sentence (its phonemes then carry an ``(en)`` marker, which language.py refuses).
Nouns come with their measure word so that the sentences are grammatical, if plain.
"""

PEOPLE = ("老师", "医生", "学生", "妈妈", "爸爸", "哥哥", "姐姐", "弟弟", "妹妹", "朋友", "邻居", "司机",
          "农民", "孩子", "奶奶", "爷爷", "警察", "厨师")
TIMES = ("今天", "昨天", "明天早上", "晚上", "下午", "刚才", "每天", "上个星期")
PLACES = ("花园里", "河边", "学校", "厨房里", "市场上", "山上", "村子里", "车站", "图书馆", "公园里",
          "桌子上", "窗户旁边", "商店里", "医院")
# verb, takes an object (else it ends the clause)
VERBS = (("找到了", True), ("打开了", True), ("买了", True), ("洗了", True), ("画了", True), ("拿走了", True),
         ("修好了", True), ("看见了", True), ("借了", True), ("放下了", True), ("带回了", True), ("卖掉了", True),
         ("睡觉", False), ("唱歌", False), ("休息", False), ("吃饭", False), ("跑步", False), ("写字", False))
# (measure word, noun)
OBJECTS = (("本", "书"), ("张", "照片"), ("把", "椅子"), ("辆", "自行车"), ("封", "信"), ("件", "衣服"),
           ("只", "小猫"), ("条", "鱼"), ("瓶", "牛奶"), ("支", "铅笔"), ("台", "电脑"), ("双", "鞋子"),
           ("个", "篮子"), ("块", "手表"), ("个", "杯子"), ("扇", "窗户"), ("张", "桌子"), ("个", "苹果"))
NUMBERS = ("一", "两", "三", "这", "那", "几")
ADJECTIVES = ("红色的", "新的", "旧的", "漂亮的", "干净的", "便宜的", "很大的", "小小的", "绿色的", "有名的")
QUALITIES = ("很好", "太贵了", "非常漂亮", "有点旧", "很干净", "特别重", "不错")


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def sentence(rng):
    """One sentence (no final punctuation) from the numpy generator ``rng``."""
    person = _pick(rng, PEOPLE)
    if rng.random() < 0.25:  # a judgement: 我觉得这本书很好
        measure, noun = _pick(rng, OBJECTS)
        return f"{person}觉得{_pick(rng, ('这', '那'))}{measure}{noun}{_pick(rng, QUALITIES)}"
    words = []
    if rng.random() < 0.6:
        words.append(_pick(rng, TIMES))
    words.append(person)
    if rng.random() < 0.6:
        words.append("在" + _pick(rng, PLACES))
    verb, transitive = _pick(rng, VERBS)
    words.append(verb)
    if transitive:
        measure, noun = _pick(rng, OBJECTS)
        adjective = _pick(rng, ADJECTIVES) if rng.random() < 0.5 else ""
        words.append(f"{_pick(rng, NUMBERS)}{measure}{adjective}{noun}")
    return "".join(words)

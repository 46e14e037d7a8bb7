"""The subjects of C-Eval and CMMLU: file name, Chinese name (used in the prompt's description) and category.

C-Eval: its four categories (from C-Eval's subject_mapping.json) and its Hard subset. CMMLU: the five groups of
CMMLU's categories.py, each subject under its first subcategory's group; "China specific" is reported beside them
as an extra group, as C-Eval's Hard is.
"""

STEM, SOCIAL, HUMANITIES, OTHER = "STEM", "Social Science", "Humanities", "Other"

_CEVAL = """
computer_network 计算机网络 STEM|operating_system 操作系统 STEM|computer_architecture 计算机组成 STEM|
college_programming 大学编程 STEM|college_physics 大学物理 STEM|college_chemistry 大学化学 STEM|
advanced_mathematics 高等数学 STEM|probability_and_statistics 概率统计 STEM|discrete_mathematics 离散数学 STEM|
electrical_engineer 注册电气工程师 STEM|metrology_engineer 注册计量师 STEM|high_school_mathematics 高中数学 STEM|
high_school_physics 高中物理 STEM|high_school_chemistry 高中化学 STEM|high_school_biology 高中生物 STEM|
middle_school_mathematics 初中数学 STEM|middle_school_biology 初中生物 STEM|middle_school_physics 初中物理 STEM|
middle_school_chemistry 初中化学 STEM|veterinary_medicine 兽医学 STEM|
college_economics 大学经济学 SOCIAL|business_administration 工商管理 SOCIAL|marxism 马克思主义基本原理 SOCIAL|
mao_zedong_thought 毛泽东思想和中国特色社会主义理论体系概论 SOCIAL|education_science 教育学 SOCIAL|
teacher_qualification 教师资格 SOCIAL|high_school_politics 高中政治 SOCIAL|high_school_geography 高中地理 SOCIAL|
middle_school_politics 初中政治 SOCIAL|middle_school_geography 初中地理 SOCIAL|
modern_chinese_history 近代史纲要 HUMANITIES|ideological_and_moral_cultivation 思想道德修养与法律基础 HUMANITIES|
logic 逻辑学 HUMANITIES|law 法学 HUMANITIES|chinese_language_and_literature 中国语言文学 HUMANITIES|
art_studies 艺术学 HUMANITIES|professional_tour_guide 导游资格 HUMANITIES|legal_professional 法律职业资格 HUMANITIES|
high_school_chinese 高中语文 HUMANITIES|high_school_history 高中历史 HUMANITIES|middle_school_history 初中历史 HUMANITIES|
civil_servant 公务员 OTHER|sports_science 体育学 OTHER|plant_protection 植物保护 OTHER|basic_medicine 基础医学 OTHER|
clinical_medicine 临床医学 OTHER|urban_and_rural_planner 注册城乡规划师 OTHER|accountant 注册会计师 OTHER|
fire_engineer 注册消防工程师 OTHER|environmental_impact_assessment_engineer 环境影响评价工程师 OTHER|
tax_accountant 税务师 OTHER|physician 医师资格 OTHER
"""
CEVAL_HARD = (
    "advanced_mathematics discrete_mathematics probability_and_statistics college_chemistry college_physics "
    "high_school_mathematics high_school_chemistry high_school_physics"
).split()

_CMMLU = """
agronomy 农学 OTHER|anatomy 解剖学 STEM|ancient_chinese 古汉语 SOCIAL|arts 艺术学 HUMANITIES|astronomy 天文学 STEM|
business_ethics 商业伦理 SOCIAL|chinese_civil_service_exam 中国公务员考试 SOCIAL|chinese_driving_rule 中国驾驶规则 OTHER|
chinese_food_culture 中国饮食文化 SOCIAL|chinese_foreign_policy 中国外交政策 SOCIAL|chinese_history 中国历史 HUMANITIES|
chinese_literature 中国文学 HUMANITIES|chinese_teacher_qualification 中国教师资格 SOCIAL|clinical_knowledge 临床知识 OTHER|
college_actuarial_science 大学精算学 STEM|college_education 大学教育学 SOCIAL|
college_engineering_hydrology 大学工程水文学 STEM|college_law 大学法律 HUMANITIES|college_mathematics 大学数学 STEM|
college_medical_statistics 大学医学统计 STEM|college_medicine 大学医学 OTHER|computer_science 计算机科学 STEM|
computer_security 计算机安全 OTHER|conceptual_physics 概念物理学 STEM|construction_project_management 建设工程管理 OTHER|
economics 经济学 SOCIAL|education 教育学 SOCIAL|electrical_engineering 电气工程 STEM|elementary_chinese 小学语文 SOCIAL|
elementary_commonsense 小学常识 OTHER|elementary_information_and_technology 小学信息技术 OTHER|
elementary_mathematics 初等数学 STEM|ethnology 民族学 SOCIAL|food_science 食品科学 OTHER|genetics 遗传学 STEM|
global_facts 全球事实 HUMANITIES|high_school_biology 高中生物 STEM|high_school_chemistry 高中化学 STEM|
high_school_geography 高中地理 SOCIAL|high_school_mathematics 高中数学 STEM|high_school_physics 高中物理学 STEM|
high_school_politics 高中政治 SOCIAL|human_sexuality 人类性行为 OTHER|international_law 国际法学 HUMANITIES|
journalism 新闻学 SOCIAL|jurisprudence 法理学 HUMANITIES|legal_and_moral_basis 法律与道德基础 OTHER|
logical 逻辑学 HUMANITIES|machine_learning 机器学习 STEM|management 管理学 SOCIAL|marketing 市场营销 SOCIAL|
marxist_theory 马克思主义理论 HUMANITIES|modern_chinese 现代汉语 SOCIAL|nutrition 营养学 OTHER|philosophy 哲学 HUMANITIES|
professional_accounting 专业会计 SOCIAL|professional_law 专业法学 HUMANITIES|professional_medicine 专业医学 OTHER|
professional_psychology 专业心理学 SOCIAL|public_relations 公共关系 SOCIAL|security_study 安全研究 SOCIAL|
sociology 社会学 SOCIAL|sports_science 体育学 OTHER|traditional_chinese_medicine 中医中药 OTHER|virology 病毒学 STEM|
world_history 世界历史 HUMANITIES|world_religions 世界宗教 HUMANITIES
"""
CMMLU_CHINA_SPECIFIC = (
    "ancient_chinese chinese_civil_service_exam chinese_driving_rule chinese_food_culture chinese_foreign_policy "
    "chinese_history chinese_literature chinese_teacher_qualification construction_project_management "
    "elementary_chinese elementary_commonsense ethnology high_school_politics modern_chinese "
    "traditional_chinese_medicine"
).split()

_CATEGORY_NAMES = {"STEM": STEM, "SOCIAL": SOCIAL, "HUMANITIES": HUMANITIES, "OTHER": OTHER}


def _table(text: str) -> dict[str, tuple[str, str]]:
    entries = [e.split() for e in text.replace("\n", "").split("|")]
    return {name: (chinese, _CATEGORY_NAMES[category]) for name, chinese, category in entries}


CEVAL_SUBJECTS = _table(_CEVAL)  # {subject: (Chinese name, category)}
CMMLU_SUBJECTS = _table(_CMMLU)

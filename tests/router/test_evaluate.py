"""Leave-sources-out reporting: where a held-out source's misses go."""

from router.catalog import ROLES
from router.training.data import DOMAIN_ROLE
from router.training.evaluate import per_source_misses


def test_per_source_misses_name_the_role_each_miss_went_to_worst_source_first():
    role = {domain: ROLES.index(name) for domain, name in DOMAIN_ROLE.items()}
    sources = ["law", "law", "law", "psych", "psych", "gsm8k"]
    domains = ["general", "general", "general", "biomedical", "general", "math"]
    predicted = [role["math"], role["math"], role["general"], role["general"], role["general"], role["math"]]
    misses = per_source_misses(sources, domains, predicted)
    assert misses == {"law": {"general -> math": 2}, "psych": {"biomedical -> general": 1}}
    assert list(misses) == ["law", "psych"]  # gsm8k had no miss

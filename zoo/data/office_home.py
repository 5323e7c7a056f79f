"""Office-Home (Venkateswara et al., CVPR 2017) for UCDIR's cross-domain retrieval.

Layout as downloaded (``OfficeHomeDataset_10072016``): ``<root>/<domain>/<class>/<image>`` with
domains ``Art``, ``Clipart``, ``Product``, ``Real World`` and 65 classes. Office-Home has no
official split; UCDIR trains and evaluates on all images of a domain (``main.py`` reads
``<domain>/train`` for both; ``split="train"`` reads that arrangement).

``office_home(root, query_domain, database_domain)``: queries = every image of one domain,
database = every image of the other (the protocol ``class_precision`` counts same-class hits).
"""

from __future__ import annotations

from pathlib import Path

from zoo.data.base import RetrievalSet, register_eval_dataset
from zoo.data.domains import Domain, cross_domain_set, read_class_folders
from zoo.errors import DatasetError

DOMAINS = ("Art", "Clipart", "Product", "Real World")


def office_home_domain(root: Path, domain: str, split: str | None = None) -> Domain:
    """One domain's images: ``root/<domain>/<class>/*`` (or ``root/<domain>/<split>/<class>/*``)."""
    folder = Path(root) / domain
    if not folder.is_dir():
        present = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
        raise DatasetError(f"Office-Home domain folder not found: {folder} (domains are {', '.join(DOMAINS)}; "
                           f"found: {', '.join(present) or 'nothing'})")
    domain_set = read_class_folders(folder / split if split else folder, what=f"Office-Home {domain}")
    domain_set.name = domain
    return domain_set


@register_eval_dataset("office_home")
def office_home(root: Path, query_domain: str = "Product", database_domain: str = "Clipart",
                split: str | None = None) -> RetrievalSet:
    """Retrieval from ``query_domain`` into ``database_domain`` (class-level relevance)."""
    return cross_domain_set(f"office_home_{query_domain}_to_{database_domain}", Path(root),
                            office_home_domain(root, query_domain, split), office_home_domain(root, database_domain, split))

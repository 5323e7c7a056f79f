"""DomainNet (Peng et al., ICCV 2019), the 7-class subset UCDIR retrieves in.

Layout as downloaded: ``<root>/<domain>/<class>/<image>`` for domains ``clipart``, ``infograph``,
``painting``, ``quickdraw``, ``real``, ``sketch``, with the official split files
``<root>/<domain>_train.txt`` / ``<domain>_test.txt`` (lines ``clipart/bird/clipart_015_000001.jpg 15``).
UCDIR uses the classes bird, feather, teapot, tiger, whale, windmill, zebra (paper Sec. 4;
``scripts/domainnet.sh --num-cluster 7``) and trains and evaluates on the *train* images
(``main.py`` reads ``<domain>/train`` for both; the authors' arranged folders are not published).

``split``: ``"train"`` (default) reads ``<domain>_train.txt``, or the original's arrangement
``<domain>/train/<class>/`` when there is no split file; ``None`` takes every image of the class folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from zoo.data.base import RetrievalSet, register_eval_dataset
from zoo.data.domains import Domain, cross_domain_set, read_class_folders, read_list_file
from zoo.errors import DatasetError

DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
CLASSES = ("bird", "feather", "teapot", "tiger", "whale", "windmill", "zebra")


def domainnet_domain(root: Path, domain: str, split: str | None = "train",
                     classes: Sequence[str] = CLASSES) -> Domain:
    """One domain's images of ``classes`` (see the module doc for ``split``)."""
    root = Path(root)
    if split is None:
        folder = root / domain
    else:
        list_file = root / f"{domain}_{split}.txt"
        if list_file.is_file():
            return read_list_file(root, list_file, classes, domain)
        folder = root / domain / split
        if not folder.is_dir():
            raise DatasetError(f"DomainNet {domain} {split}: neither the split file {list_file} nor the folder "
                               f"{folder} exists (split=None reads {root / domain}/<class>/ whole)")
    domain_set = read_class_folders(folder, classes, what=f"DomainNet {domain}")
    domain_set.name = domain
    return domain_set


@register_eval_dataset("domainnet")
def domainnet(root: Path, query_domain: str = "clipart", database_domain: str = "sketch",
              split: str | None = "train", classes: Sequence[str] = CLASSES) -> RetrievalSet:
    """Retrieval from ``query_domain`` into ``database_domain`` over the 7 classes (class-level relevance)."""
    return cross_domain_set(f"domainnet_{query_domain}_to_{database_domain}", Path(root),
                            domainnet_domain(root, query_domain, split, classes),
                            domainnet_domain(root, database_domain, split, classes))

"""One config file: its top level read, then its Domain built from the sections below it."""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from ratelimitd.config import plans
from ratelimitd.config.descriptors import DescriptorReader, read_defaults
from ratelimitd.config.errors import ConfigError
from ratelimitd.config.extract_rules import read_extract
from ratelimitd.config.quotas import QUOTA_FIELDS, QuotaReader, tenant_specs
from ratelimitd.config.rlqs_section import read_rlqs
from ratelimitd.config.yamlnodes import NULL_TAG, Fields, NodeReader
from ratelimitd.model.rules import Defaults, Domain, Rule, Source

TOP_FIELDS = ("domain", "descriptors", "defaults", *QUOTA_FIELDS, "extract", "rlqs")
# A file of only these extends the domain another file defines (a generated tenant list).
TENANT_LIST_FIELDS = ("domain", "tenants")


class DomainFile:
    """Builds one file's Domain from the YAML node tree, which keeps line numbers."""

    def __init__(self, file: str, defaults: Defaults) -> None:
        self.file = file
        self.defaults = defaults
        self.nodes = NodeReader(file)
        self.rules: list[Rule] = []
        self.domain = ""
        self.domain_source = Source(file, 0)
        self._fields: Fields = {}

    @property
    def errors(self) -> list[ConfigError]:
        """The file's errors so far, in the order they were found."""
        return self.nodes.errors

    @property
    def warnings(self) -> list[ConfigError]:
        """What the file has that loads but has no effect (or overrides something)."""
        return self.nodes.warnings

    def read(self, text: str) -> bool:
        """Parse the file's top level and its domain name; False (with errors) if unusable."""
        nodes = self.nodes
        node = nodes.document(text)
        if nodes.errors:  # a syntax error, the file's first
            return False
        if node is None or node.tag == NULL_TAG:
            nodes.error_at(None, "empty file: expected a mapping with 'domain' and 'descriptors'")
            return False
        fields = nodes.mapping(node, TOP_FIELDS, "the top level", reference=True)
        if fields is None:
            return False
        domain_node = fields.get("domain")
        if domain_node is None:
            nodes.error(node, "missing 'domain'")
            return False
        name = nodes.string(domain_node, "domain")
        if not name:
            if isinstance(domain_node, yaml.ScalarNode):
                nodes.error(domain_node, "'domain' must not be empty")
            return False
        self.domain, self.domain_source, self._fields = name, nodes.source(domain_node), fields
        return True

    @property
    def is_tenant_list(self) -> bool:
        """Whether the file only lists tenants of a domain another file defines."""
        return "tenants" in self._fields and set(self._fields) <= set(TENANT_LIST_FIELDS)

    def tenant_specs(self) -> list[plans.TenantSpec]:
        """The file's `tenants`: `<name>: <plan>`, or `<name>: {plan, overrides}`."""
        return tenant_specs(self.nodes, self._fields.get("tenants"))

    def build(self, extra_tenants: Sequence[plans.TenantSpec] = ()) -> Domain:
        """The file's domain, with the tenants of other files added to its own."""
        fields, name = self._fields, self.domain
        if "defaults" in fields:
            self.defaults = read_defaults(self.nodes, fields["defaults"], self.defaults)
        descriptors = DescriptorReader(self.nodes, name, self.defaults, self.rules)
        root = descriptors.level(fields.get("descriptors"), name)
        if extra_tenants or any(f in fields for f in QUOTA_FIELDS):
            quotas = QuotaReader(descriptors, fields, self.domain_source)
            quotas.add_tenants(root, list(extra_tenants))
        extraction = read_extract(self.nodes, fields.get("extract"))
        rlqs = read_rlqs(descriptors, fields.get("rlqs"))
        return Domain(name, root, self.domain_source, self.defaults, extraction, rlqs)

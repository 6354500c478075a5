//! A metric read at scrape time, labelled with the node like the rest.

use crate::Registry;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::HashMap;

/// A gauge (or counter) whose value a function gives at each scrape.
pub(crate) struct Sampled {
    desc: Desc,
    kind: MetricType,
    labels: Vec<LabelPair>,
    value: Box<dyn Fn() -> f64 + Send + Sync>,
}

impl Sampled {
    /// A gauge of `registry`'s node.
    pub fn gauge(
        registry: &Registry,
        name: &str,
        help: &str,
        value: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> Self {
        Self::new(registry, name, help, MetricType::GAUGE, value)
    }

    /// A counter of `registry`'s node (a total kept elsewhere, such as the
    /// kernel's CPU time).
    pub fn counter(
        registry: &Registry,
        name: &str,
        help: &str,
        value: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> Self {
        Self::new(registry, name, help, MetricType::COUNTER, value)
    }

    fn new(
        registry: &Registry,
        name: &str,
        help: &str,
        kind: MetricType,
        value: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> Self {
        let pairs = [("node", &*registry.node), ("region", &*registry.region)];
        let desc = Desc::new(
            name.to_owned(),
            help.to_owned(),
            Vec::new(),
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        )
        .expect("a valid metric definition");
        let labels = pairs
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name((*k).to_owned());
                l.set_value((*v).to_owned());
                l
            })
            .collect();
        Self {
            desc,
            kind,
            labels,
            value: Box::new(value),
        }
    }
}

impl Collector for Sampled {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let v = (self.value)();
        let mut metric = Metric::default();
        metric.set_label(self.labels.clone());
        match self.kind {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(v);
                metric.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(v);
                metric.set_gauge(g);
            }
        }
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(self.kind);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

//! Resolution of traffic control: `[shape]` (bandwidth) and `[limits]`
//! (admission), with the common-case flags on top.

use std::path::Path;

use toml::Spanned;

use super::{ConfigError, Resolver};
use crate::config::flags::ServeArgs;
use crate::limits::LimitsConfig;
use crate::limits::config::HerdConfig;
use crate::shape::ShapeConfig;
use crate::sync::publish::PRIVATE_DIR;

impl Resolver<'_> {
    pub(super) fn shape(
        &self,
        args: &ServeArgs,
        file: Option<Spanned<ShapeConfig>>,
    ) -> Result<ShapeConfig, ConfigError> {
        let (span, mut shape) = match file {
            Some(s) => (Some(s.span()), s.into_inner()),
            None => (None, ShapeConfig::default()),
        };
        if let Some(rate) = args.link_rate {
            shape.link_rate = Some(rate);
        }
        if let Some(rate) = args.client_rate {
            shape.client_rate = Some(rate);
        }
        shape.validate().map_err(|e| {
            let at = span.map(|table| {
                e.key
                    .and_then(|k| self.key_span(&table, k))
                    .unwrap_or(table)
            });
            self.invalid(at, format!("[shape]: {}", e.reason))
        })?;
        Ok(shape)
    }

    pub(super) fn limits(
        &self,
        args: &ServeArgs,
        file: Option<Spanned<LimitsConfig>>,
        root: &Path,
    ) -> Result<LimitsConfig, ConfigError> {
        let (span, mut limits) = match file {
            Some(l) => (Some(l.span()), l.into_inner()),
            None => (None, LimitsConfig::default()),
        };
        if let Some(rate) = args.bulk_min_rate {
            let bytes = rate.bytes_per_sec();
            match &mut limits.herd {
                Some(herd) => herd.bulk_min_rate = bytes,
                None => limits.herd = Some(HerdConfig::with_min_rate(bytes)),
            }
        }
        // Quota usage survives restarts by default, beside the sync state.
        match &limits.state_file {
            Some(path) => limits.state_file = Some(self.relative_to_file(path)),
            None => limits.state_file = Some(root.join(PRIVATE_DIR).join("limits-state")),
        }
        limits
            .validate()
            .map_err(|e| self.invalid(span, format!("[limits]: {e}")))?;
        Ok(limits)
    }
}

//! Where the diagnostics of one object's translation go, for the
//! translators whose one object (an AuthorizationPolicy, a VirtualService,
//! a DestinationRule) may reach many services: what is wrong with it is
//! reported once, under the object's `<namespace>/<name>`.

use crate::model::ObjectKey;

use super::{Diagnostic, ResourceType, Severity};

pub(crate) struct Notes<'a> {
    resource_type: ResourceType,
    object: ObjectKey,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl<'a> Notes<'a> {
    pub(crate) fn new(
        resource_type: ResourceType,
        object: ObjectKey,
        diagnostics: &'a mut Vec<Diagnostic>,
    ) -> Self {
        Notes {
            resource_type,
            object,
            diagnostics,
        }
    }

    pub(crate) fn push(&mut self, severity: Severity, message: String) {
        self.diagnostics.push(Diagnostic {
            resource_type: self.resource_type,
            resource: format!("{}/{}", self.object.namespace, self.object.name),
            severity,
            object: self.object.clone(),
            message,
        });
    }

    pub(crate) fn warn(&mut self, message: String) {
        self.push(Severity::Warning, message);
    }

    /// Warns about each set field that is not applied.
    pub(crate) fn unsupported(&mut self, parent: &str, fields: &[(&str, bool)]) {
        for (field, _) in fields.iter().filter(|(_, set)| *set) {
            self.warn(format!(
                "`{parent}.{field}` is not supported by the waypoint; it is ignored"
            ));
        }
    }
}

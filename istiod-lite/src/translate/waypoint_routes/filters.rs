//! The filters of a rule or backendRef: header modifiers, redirects,
//! rewrites and mirrors, checked the way the waypoint would check them.
//!
//! A filter that cannot be sent makes the whole list invalid (the rule then
//! loses its backends); only a mirror whose backend does not resolve is
//! dropped alone, as the Gateway API asks.

use proto::waypoint::{self as pb, filter, path_modifier};

use super::values::{self, Invalid, invalid};
use super::{Context, resolve_service};
use crate::model::{
    HTTPHeaderFilter, HTTPPathModifier, HTTPRequestMirrorFilter, HTTPRequestRedirectFilter,
    HTTPRouteFilter, HTTPRouteRule, HTTPURLRewriteFilter, PathMatchType,
};

/// A list of filters, in order; a mirror that does not resolve is dropped
/// with a warning.
pub(super) fn filters(
    cx: &mut Context<'_>,
    label: &str,
    filters: &[HTTPRouteFilter],
) -> Result<Vec<pb::Filter>, Invalid> {
    let mut out = Vec::with_capacity(filters.len());
    for (position, f) in filters.iter().enumerate() {
        let missing = || {
            invalid(format!(
                "filter {position} is of type {} but has no matching field",
                f.filter_type
            ))
        };
        let kind = match f.filter_type.as_str() {
            "RequestHeaderModifier" => filter::Kind::RequestHeaderModifier(header_modifier(
                f.request_header_modifier.as_ref().ok_or_else(missing)?,
            )?),
            "ResponseHeaderModifier" => filter::Kind::ResponseHeaderModifier(header_modifier(
                f.response_header_modifier.as_ref().ok_or_else(missing)?,
            )?),
            "RequestRedirect" => filter::Kind::RequestRedirect(redirect(
                f.request_redirect.as_ref().ok_or_else(missing)?,
            )?),
            "URLRewrite" => {
                filter::Kind::UrlRewrite(url_rewrite(f.url_rewrite.as_ref().ok_or_else(missing)?)?)
            }
            "RequestMirror" => {
                let mirror_filter = f.request_mirror.as_ref().ok_or_else(missing)?;
                match mirror(cx, mirror_filter)? {
                    Some(mirror) => filter::Kind::RequestMirror(mirror),
                    None => continue,
                }
            }
            "ExtensionRef" => {
                return Err(invalid(format!(
                    "filter {position} is an ExtensionRef, which is not supported"
                )));
            }
            other => {
                return Err(invalid(format!(
                    "filter {position} has unknown type {other:?}"
                )));
            }
        };
        out.push(pb::Filter { kind: Some(kind) });
    }
    let redirects = out
        .iter()
        .any(|f| matches!(f.kind, Some(filter::Kind::RequestRedirect(_))));
    let rewrites = out
        .iter()
        .any(|f| matches!(f.kind, Some(filter::Kind::UrlRewrite(_))));
    if redirects && rewrites {
        return Err(invalid(format!(
            "{label} combines RequestRedirect and URLRewrite, which cannot be combined; keep one"
        )));
    }
    Ok(out)
}

fn header_modifier(m: &HTTPHeaderFilter) -> Result<pb::HeaderModifier, Invalid> {
    let headers = |list: &[crate::model::HTTPHeader]| {
        list.iter()
            .map(|h| {
                values::header_name(&h.name)?;
                values::header_value(&h.name, &h.value)?;
                Ok(pb::Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
            })
            .collect::<Result<Vec<_>, Invalid>>()
    };
    for name in &m.remove {
        values::header_name(name)?;
    }
    Ok(pb::HeaderModifier {
        set: headers(&m.set)?,
        add: headers(&m.add)?,
        remove: m.remove.clone(),
    })
}

fn redirect(r: &HTTPRequestRedirectFilter) -> Result<pb::RequestRedirect, Invalid> {
    let scheme = r.scheme.clone().unwrap_or_default();
    if !matches!(scheme.as_str(), "" | "http" | "https") {
        return Err(invalid(format!(
            "redirect scheme {scheme:?} is neither \"http\" nor \"https\""
        )));
    }
    let hostname = r.hostname.clone().unwrap_or_default();
    if !hostname.is_empty() {
        values::hostname(&hostname)?;
    }
    let status_code = r.status_code.unwrap_or(302);
    if ![301, 302, 303, 307, 308].contains(&status_code) {
        return Err(invalid(format!(
            "redirect status code {status_code} is not one of 301, 302, 303, 307, 308"
        )));
    }
    Ok(pb::RequestRedirect {
        scheme,
        hostname,
        port: r.port.map(u32::from).unwrap_or_default(),
        path: r.path.as_ref().map(path_modifier).transpose()?,
        status_code: u32::from(status_code),
    })
}

fn url_rewrite(r: &HTTPURLRewriteFilter) -> Result<pb::UrlRewrite, Invalid> {
    let hostname = r.hostname.clone().unwrap_or_default();
    if !hostname.is_empty() {
        values::hostname(&hostname)?;
    }
    Ok(pb::UrlRewrite {
        hostname,
        path: r.path.as_ref().map(path_modifier).transpose()?,
    })
}

fn path_modifier(m: &HTTPPathModifier) -> Result<pb::PathModifier, Invalid> {
    let missing = |field: &str| {
        invalid(format!(
            "a path modifier of type {} has no {field}",
            m.modifier_type
        ))
    };
    let kind = match m.modifier_type.as_str() {
        "ReplaceFullPath" => {
            let path = m
                .replace_full_path
                .clone()
                .ok_or_else(|| missing("replaceFullPath"))?;
            values::absolute_path("replaceFullPath", &path)?;
            path_modifier::Kind::ReplaceFullPath(path)
        }
        "ReplacePrefixMatch" => path_modifier::Kind::ReplacePrefixMatch(
            m.replace_prefix_match
                .clone()
                .ok_or_else(|| missing("replacePrefixMatch"))?,
        ),
        other => {
            return Err(invalid(format!(
                "path modifier type {other:?} is neither ReplaceFullPath nor ReplacePrefixMatch"
            )));
        }
    };
    Ok(pb::PathModifier { kind: Some(kind) })
}

/// `ReplacePrefixMatch` needs the rule to have exactly one match, of type
/// `PathPrefix` (no matches is one, `PathPrefix /`): the waypoint refuses
/// the whole resource otherwise.
pub(super) fn check_path_modifiers(
    rule: &HTTPRouteRule,
    filters: &[pb::Filter],
) -> Result<(), Invalid> {
    let replaces_prefix = filters.iter().any(|f| {
        let path = match &f.kind {
            Some(filter::Kind::RequestRedirect(r)) => r.path.as_ref(),
            Some(filter::Kind::UrlRewrite(r)) => r.path.as_ref(),
            _ => None,
        };
        matches!(
            path.and_then(|p| p.kind.as_ref()),
            Some(path_modifier::Kind::ReplacePrefixMatch(_))
        )
    });
    let one_prefix_match = match rule.matches.as_slice() {
        [] => true,
        [only] => only
            .path
            .as_ref()
            .is_none_or(|p| p.match_type == PathMatchType::PathPrefix),
        _ => false,
    };
    if replaces_prefix && !one_prefix_match {
        return Err(invalid(
            "a ReplacePrefixMatch path modifier needs the rule to have exactly one match, of type \
             PathPrefix; give it one, or use ReplaceFullPath",
        ));
    }
    Ok(())
}

/// A mirror, or `None` (with a warning) when its backend does not resolve.
fn mirror(
    cx: &mut Context<'_>,
    m: &HTTPRequestMirrorFilter,
) -> Result<Option<pb::RequestMirror>, Invalid> {
    let fraction = match (&m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "a RequestMirror sets both percent and fraction; keep one",
            ));
        }
        (Some(percent), None) => pb::Fraction {
            numerator: *percent,
            denominator: 100,
        },
        (None, Some(fraction)) => pb::Fraction {
            numerator: fraction.numerator,
            denominator: fraction.denominator.unwrap_or(100),
        },
        // The Gateway API's default: every request.
        (None, None) => pb::Fraction {
            numerator: 100,
            denominator: 100,
        },
    };
    if fraction.denominator == 0 || fraction.numerator > fraction.denominator {
        return Err(invalid(format!(
            "mirror fraction {}/{} is not a share: the denominator must be at least 1 and the \
             numerator no larger than it",
            fraction.numerator, fraction.denominator
        )));
    }
    match resolve_service(cx, &m.backend_ref) {
        Ok(backend) => Ok(Some(pb::RequestMirror {
            backend: Some(backend),
            fraction: Some(fraction),
        })),
        Err(Invalid(reason)) => {
            cx.warn(format!(
                "RequestMirror backend: {reason}; requests are not mirrored"
            ));
            Ok(None)
        }
    }
}

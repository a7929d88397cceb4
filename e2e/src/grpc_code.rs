//! gRPC status codes by their canonical names (`OK`, `UNAVAILABLE`), as the
//! gRPC spec and Istio's `grpc_response_status` metric spell them: echo-grpc
//! takes either the number or the name, and `traffic grpc` prints names.
//! Pure.

use tonic::Code;

/// Every code, in numeric order: the index is the code's number.
const NAMES: [(Code, &str); 17] = [
    (Code::Ok, "OK"),
    (Code::Cancelled, "CANCELLED"),
    (Code::Unknown, "UNKNOWN"),
    (Code::InvalidArgument, "INVALID_ARGUMENT"),
    (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
    (Code::NotFound, "NOT_FOUND"),
    (Code::AlreadyExists, "ALREADY_EXISTS"),
    (Code::PermissionDenied, "PERMISSION_DENIED"),
    (Code::ResourceExhausted, "RESOURCE_EXHAUSTED"),
    (Code::FailedPrecondition, "FAILED_PRECONDITION"),
    (Code::Aborted, "ABORTED"),
    (Code::OutOfRange, "OUT_OF_RANGE"),
    (Code::Unimplemented, "UNIMPLEMENTED"),
    (Code::Internal, "INTERNAL"),
    (Code::Unavailable, "UNAVAILABLE"),
    (Code::DataLoss, "DATA_LOSS"),
    (Code::Unauthenticated, "UNAUTHENTICATED"),
];

/// `UNAVAILABLE` for [`Code::Unavailable`].
pub fn code_name(code: Code) -> &'static str {
    NAMES
        .iter()
        .find(|(known, _)| *known == code)
        .map_or("UNKNOWN", |(_, name)| name)
}

/// The name of code number `number`, or `None` past the last code.
pub fn name_of_number(number: u16) -> Option<&'static str> {
    NAMES.get(usize::from(number)).map(|(_, name)| *name)
}

/// A code from its number (`14`) or its name in any case (`UNAVAILABLE`,
/// `unavailable`); `None` for anything else.
pub fn parse_code(text: &str) -> Option<Code> {
    let text = text.trim();
    if let Ok(number) = text.parse::<usize>() {
        return NAMES.get(number).map(|(code, _)| *code);
    }
    NAMES
        .iter()
        .find(|(_, name)| name.eq_ignore_ascii_case(text))
        .map(|(code, _)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_agree_with_tonic() {
        for (number, (code, name)) in NAMES.iter().enumerate() {
            assert_eq!(*code as usize, number, "{name}");
            assert_eq!(code_name(*code), *name);
            assert_eq!(parse_code(name), Some(*code));
            assert_eq!(parse_code(&number.to_string()), Some(*code));
        }
    }

    #[test]
    fn parses_either_spelling_and_refuses_the_rest() {
        assert_eq!(parse_code(" unavailable "), Some(Code::Unavailable));
        assert_eq!(parse_code("14"), Some(Code::Unavailable));
        assert_eq!(parse_code("17"), None);
        assert_eq!(parse_code("-1"), None);
        assert_eq!(parse_code("BROKEN"), None);
        assert_eq!(name_of_number(0), Some("OK"));
        assert_eq!(name_of_number(17), None);
    }
}

"""Operations: configuration, the catalog snapshot, the audit log, metrics and checks of the live database."""

-- The mirror's account in the compose stack: the privileges of
-- docs/operations.md#the-mysql-accounts (the mariadb image's MARIADB_USER gets ALL on
-- MARIADB_DATABASE; this adds only what managing the read-only BI account takes).
GRANT CREATE USER ON *.* TO 'lakestream_sync'@'%';
GRANT GRANT OPTION ON lakestream.* TO 'lakestream_sync'@'%';

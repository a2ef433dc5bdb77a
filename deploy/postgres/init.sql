-- carewatch PostgreSQL bootstrap.
--
-- Run once by the postgres image as the superuser, when it initialises an empty data volume,
-- through deploy/postgres/init.sh, which passes the roles' passwords from the environment
-- (DB_PASSWORD_* of .env) as psql variables. Elsewhere:
--   psql -U postgres -v db_password_admin=... -v db_password_intake=... (each role) -f init.sql
--
-- carewatch_admin owns the database and every schema and runs the migrations
-- (`carewatch migrate`). Each service role may only use its own schema, and only for data
-- (SELECT/INSERT/UPDATE/DELETE): it cannot create, alter or drop anything, nor read
-- another service's tables.
--
-- No password is written here: `carewatch secrets init` generates them into .env.

\set ON_ERROR_STOP on

CREATE ROLE carewatch_admin LOGIN PASSWORD :'db_password_admin';
CREATE ROLE carewatch_intake LOGIN PASSWORD :'db_password_intake';
CREATE ROLE carewatch_quality_monitor LOGIN PASSWORD :'db_password_quality_monitor';
CREATE ROLE carewatch_escalation LOGIN PASSWORD :'db_password_escalation';
CREATE ROLE carewatch_notification LOGIN PASSWORD :'db_password_notification';
CREATE ROLE carewatch_workspace LOGIN PASSWORD :'db_password_workspace';

CREATE DATABASE carewatch OWNER carewatch_admin ENCODING 'UTF8';
REVOKE ALL ON DATABASE carewatch FROM PUBLIC;
GRANT CONNECT ON DATABASE carewatch
    TO carewatch_intake, carewatch_quality_monitor, carewatch_escalation, carewatch_notification,
    carewatch_workspace;

\connect carewatch

-- Nobody but the owner creates objects in public (PostgreSQL 15+ default; explicit here).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- One schema per service: owned by the admin, used by the service's role only.
CREATE SCHEMA intake AUTHORIZATION carewatch_admin;
CREATE SCHEMA monitor AUTHORIZATION carewatch_admin;
CREATE SCHEMA escalation AUTHORIZATION carewatch_admin;
CREATE SCHEMA notification AUTHORIZATION carewatch_admin;
CREATE SCHEMA workspace AUTHORIZATION carewatch_admin;

GRANT USAGE ON SCHEMA intake TO carewatch_intake;
GRANT USAGE ON SCHEMA monitor TO carewatch_quality_monitor;
GRANT USAGE ON SCHEMA escalation TO carewatch_escalation;
GRANT USAGE ON SCHEMA notification TO carewatch_notification;
GRANT USAGE ON SCHEMA workspace TO carewatch_workspace;

-- Tables and sequences the admin creates later (migrations) are covered automatically.
ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA intake
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO carewatch_intake;
ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA intake
    GRANT USAGE, SELECT ON SEQUENCES TO carewatch_intake;

ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA monitor
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO carewatch_quality_monitor;
ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA monitor
    GRANT USAGE, SELECT ON SEQUENCES TO carewatch_quality_monitor;

ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA escalation
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO carewatch_escalation;
ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA escalation
    GRANT USAGE, SELECT ON SEQUENCES TO carewatch_escalation;

ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA notification
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO carewatch_notification;
ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA notification
    GRANT USAGE, SELECT ON SEQUENCES TO carewatch_notification;

ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA workspace
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO carewatch_workspace;
ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA workspace
    GRANT USAGE, SELECT ON SEQUENCES TO carewatch_workspace;

-- The platform's identities (accounts, API tokens): written by the admin only (`carewatch
-- users`, `carewatch tokens`), read by every service to authenticate its HTTP requests.
CREATE SCHEMA identity AUTHORIZATION carewatch_admin;
GRANT USAGE ON SCHEMA identity
    TO carewatch_intake, carewatch_quality_monitor, carewatch_escalation, carewatch_notification,
    carewatch_workspace;
ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA identity
    GRANT SELECT ON TABLES
    TO carewatch_intake, carewatch_quality_monitor, carewatch_escalation, carewatch_notification,
    carewatch_workspace;

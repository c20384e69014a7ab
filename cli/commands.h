/* commands.h - the subcommands of the `pare` program.
 *
 * Each subcommand lives in its own cmd_*.c file and has this signature:
 * argv[0] is the subcommand's name, the rest are its arguments. It returns
 * the process exit status (see the PARE_EXIT_* codes). Only the command-line
 * program exits; library code returns status codes.
 */
#ifndef PARE_CLI_COMMANDS_H
#define PARE_CLI_COMMANDS_H

enum {
    PARE_EXIT_OK = 0,
    PARE_EXIT_ERROR = 1,     /* a runtime failure: I/O, memory, a bad file */
    PARE_EXIT_USAGE = 2,     /* an unknown option or a bad value */
    PARE_EXIT_DIVERGED = 3,  /* training hit a NaN or Inf */
    PARE_EXIT_INTERRUPTED = 130, /* stopped by SIGINT after saving */
};

typedef int (*pare_cmd_fn)(int argc, char **argv);

typedef struct pare_cmd {
    const char *name;
    pare_cmd_fn run;
    const char *summary;
} pare_cmd;

int cmd_version(int argc, char **argv);

#endif

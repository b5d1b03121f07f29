/* The public header is plain C99: this file is compiled with -std=c99
 * -pedantic -Werror, and running it checks the version macros against the
 * library it links. */
#include "kvfit.h"

#include <stdio.h>

int main(void) {
    kvfit_session_params p;
    kvfit_session_params_init(&p);
    if (p.struct_size != sizeof p || kvfit_version_number() != KVFIT_VERSION_NUMBER) {
        fprintf(stderr, "header and library disagree\n");
        return 1;
    }
    printf("header compiles as C99; library %s\n", kvfit_version());
    return 0;
}

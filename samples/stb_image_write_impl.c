/* stb_image_write's implementation, compiled once in its own file so that
 * kvfit's warning flags apply to our code only. */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb_image_write.h"

/* Decoding a window of a JPEG image with libjpeg-turbo, pixel for pixel what a full decode
 * (Pillow's, which uses the same library and settings) gives inside that window.
 *
 * libjpeg-turbo can skip rows (jpeg_skip_scanlines) and decode a range of columns
 * (jpeg_crop_scanline), but with chroma subsampling the rows and columns next to such an
 * edge are upsampled as if the image ended there. We therefore decode MARGIN more rows and
 * columns on each side (two iMCUs of the 4:2:0 layout; one was enough in our tests, and a
 * smaller margin measured no faster) and copy only the window. Errors never leave through
 * longjmp across Rust: they end here and come back as a return code and a message. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

#define MARGIN 32

struct ews_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *message;
    size_t message_len;
};

static void ews_error_exit(j_common_ptr cinfo) {
    struct ews_error *err = (struct ews_error *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    snprintf(err->message, err->message_len, "%s", text);
    longjmp(err->jump, 1);
}

/* Warnings about corrupt data are ignored as Pillow ignores them, except the end of the
 * data before the image is complete: a truncated file is an error (Pillow: "image file is
 * truncated"). */
static void ews_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        cinfo->err->error_exit(cinfo);
    }
}

static void ews_init(struct jpeg_decompress_struct *cinfo, struct ews_error *err, char *message,
                     size_t message_len) {
    cinfo->err = jpeg_std_error(&err->pub);
    err->pub.error_exit = ews_error_exit;
    err->pub.emit_message = ews_emit_message;
    err->message = message;
    err->message_len = message_len;
}

/* Reads the header: the image size and whether libjpeg can give RGB (not for CMYK/YCCK).
 * Returns 0, or -1 with a message. */
int ews_jpeg_info(const unsigned char *data, unsigned long len, unsigned *width,
                  unsigned *height, int *rgb_capable, char *message, size_t message_len) {
    struct jpeg_decompress_struct cinfo;
    struct ews_error err;
    ews_init(&cinfo, &err, message, message_len);
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, len);
    jpeg_read_header(&cinfo, TRUE);
    *width = cinfo.image_width;
    *height = cinfo.image_height;
    *rgb_capable = cinfo.jpeg_color_space != JCS_CMYK && cinfo.jpeg_color_space != JCS_YCCK;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

/* Decodes the window of `height` rows from `top` and `width` columns from `left` as RGB
 * into `out` (height * width * 3 bytes, row after row). The window must lie inside the
 * image. Returns 0, or -1 with a message. */
int ews_jpeg_decode_window(const unsigned char *data, unsigned long len, unsigned top,
                           unsigned left, unsigned height, unsigned width, unsigned char *out,
                           char *message, size_t message_len) {
    struct jpeg_decompress_struct cinfo;
    struct ews_error err;
    unsigned char *volatile row = NULL;
    ews_init(&cinfo, &err, message, message_len);
    if (setjmp(err.jump)) {
        free(row);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, len);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    unsigned image_w = cinfo.output_width, image_h = cinfo.output_height;
    if (top > image_h || height > image_h - top || left > image_w || width > image_w - left) {
        snprintf(message, message_len, "window %ux%u at (%u, %u) outside the %ux%u image",
                 width, height, left, top, image_w, image_h);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    JDIMENSION x0 = left > MARGIN ? left - MARGIN : 0;
    JDIMENSION x1 = image_w - left - width > MARGIN ? left + width + MARGIN : image_w;
    JDIMENSION span = x1 - x0;
    if (x0 > 0 || span < image_w) {
        jpeg_crop_scanline(&cinfo, &x0, &span);
    }
    row = malloc((size_t)span * 3);
    if (row == NULL) {
        snprintf(message, message_len, "out of memory for a %u-pixel row", (unsigned)span);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    unsigned y0 = top > MARGIN ? top - MARGIN : 0;
    if (y0 > 0) {
        jpeg_skip_scanlines(&cinfo, y0);
    }
    while (cinfo.output_scanline < top) {
        JSAMPROW p = row;
        jpeg_read_scanlines(&cinfo, &p, 1);
    }
    for (unsigned r = 0; r < height; r++) {
        JSAMPROW p = row;
        jpeg_read_scanlines(&cinfo, &p, 1);
        memcpy(out + (size_t)r * width * 3, row + (size_t)(left - x0) * 3, (size_t)width * 3);
    }
    free(row);
    row = NULL;
    jpeg_abort_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 0;
}
